//! An ordinary program instrumented with `tracing` and `log`, nothing
//! WebAssembly-specific but the one `wasi_observe::init()` call. Build it for
//! wasm32-wasip2 and run it with `wasi-observe run`:
//!
//! ```text
//! cargo build --release -p shop --target wasm32-wasip2
//! cargo run -p wasi-observe-cli -- run target/wasm32-wasip2/release/shop.wasm
//! ```

use tracing::{info, info_span, instrument, warn};

#[derive(Debug)]
struct Item {
    name: &'static str,
    price_cents: i64,
    quantity: i64,
}

#[instrument(skip(items), fields(items = items.len()))]
fn price(items: &[Item]) -> i64 {
    let total = items.iter().map(|i| i.price_cents * i.quantity).sum();
    info!(total_cents = total, "priced the cart");
    total
}

#[instrument]
fn reserve(name: &str, quantity: i64) -> Result<(), String> {
    if quantity > 5 {
        warn!(quantity, "not enough stock");
        return Err(format!("only 5 {name} left"));
    }
    Ok(())
}

#[instrument(err, skip(items))]
fn checkout(customer: &str, items: &[Item]) -> Result<i64, String> {
    let total = price(items);
    for item in items {
        reserve(item.name, item.quantity)?;
    }
    log::info!("order placed for {customer}");
    Ok(total)
}

fn main() {
    wasi_observe::init();
    log::info!("shop starting");

    let cart = [
        Item {
            name: "tea",
            price_cents: 450,
            quantity: 2,
        },
        Item {
            name: "cups",
            price_cents: 900,
            quantity: 1,
        },
    ];
    let _ = info_span!("order", otel.kind = "server", customer = "ada")
        .in_scope(|| checkout("ada", &cart));

    let too_many = [Item {
        name: "teapot",
        price_cents: 3000,
        quantity: 9,
    }];
    let _ = info_span!("order", otel.kind = "server", customer = "bob")
        .in_scope(|| checkout("bob", &too_many));
}
