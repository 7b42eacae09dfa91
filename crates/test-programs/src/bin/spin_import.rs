//! A command that imports one of Spin's own interfaces
//! (`fermyon:spin/variables@2.0.0`), as components built with Spin's SDK do.
//! Only Spin provides it: other hosts must refuse the component and say
//! which import is missing.

mod spin {
    wit_bindgen::generate!({
        inline: "
            package fermyon:spin@2.0.0;
            interface variables {
                variant error {
                    invalid-name(string),
                    undefined(string),
                    provider(string),
                    other(string),
                }
                get: func(name: string) -> result<string, error>;
            }
            world imports { import variables; }
        ",
        world: "fermyon:spin/imports@2.0.0",
    });
    pub use self::fermyon::spin::variables::get;
}

fn main() {
    println!("{:?}", spin::get("greeting").is_ok());
}
