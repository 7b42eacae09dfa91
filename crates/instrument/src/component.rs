//! Rewriting a component: every core module inside (nested components
//! included) gets a recorder, and every component level imports
//! [`RECORDER_IMPORT`] and hands it on.
//!
//! Each component level starts with five new definitions, each the first of
//! its index space: the import's instance type, the import, an alias of its
//! `flush`, that function lowered to a core function, and a core instance
//! exporting it. Every index into those spaces (component types, instances
//! and functions; core functions and instances) shifts by one; instantiations
//! of rewritten modules and components get one more argument.

use anyhow::{Result, anyhow};
use wasm_encoder::reencode::{Error as ReError, Reencode, ReencodeComponent, component_utils};
use wasm_encoder::{
    Alias, CanonicalFunctionSection, Component, ComponentAliasSection, ComponentExportKind,
    ComponentImportSection, ComponentInstanceSection, ComponentSectionId, ComponentTypeRef,
    ComponentTypeSection, CustomSection, ExportKind, InstanceSection, InstanceType, ModuleArg,
    PrimitiveValType, RawSection,
};
use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, ComponentTypeRef as PTypeRef,
    Parser, Payload,
};

use crate::module::{self, Mode};
use crate::{FUNCTIONS_SECTION, Options, RECORDER_FLUSH, RECORDER_IMPORT, Report, WORDS_PER_FLUSH};

pub(crate) fn instrument(wasm: &[u8], options: &Options, report: &mut Report) -> Result<Vec<u8>> {
    let mut r = Rewriter {
        options,
        report,
        frames: vec![Frame::Component(Level::default())],
        next_is_component: false,
        names: Vec::new(),
        error: None,
    };
    let mut component = Component::new();
    let result = r.parse_component(&mut component, Parser::new(0), wasm);
    if let Some(e) = r.error.take() {
        return Err(e);
    }
    result.map_err(crate::reencode_error)?;
    component.section(&CustomSection {
        name: FUNCTIONS_SECTION.into(),
        data: crate::names::encode_names(&r.names).into(),
    });
    Ok(component.finish())
}

/// One component level's index spaces that decide which instantiations get
/// the recorder: for each module and component index, whether it was
/// rewritten (and so needs the import).
#[derive(Default)]
struct Level {
    modules: Vec<bool>,
    components: Vec<bool>,
}

enum Frame {
    Component(Level),
    /// A type declaration's own index spaces: nothing there shifts.
    TypeScope,
}

struct Rewriter<'a> {
    options: &'a Options,
    report: &'a mut Report,
    frames: Vec<Frame>,
    next_is_component: bool,
    /// Names of the function ids, all modules together.
    names: Vec<String>,
    error: Option<anyhow::Error>,
}

impl Rewriter<'_> {
    /// The shift of the current frame's component-level index spaces.
    fn shift(&self) -> u32 {
        match self.frames.last() {
            Some(Frame::Component(_)) => 1,
            _ => 0,
        }
    }

    fn outer(&self, count: u32) -> Option<&Frame> {
        let i = self.frames.len().checked_sub(1 + count as usize)?;
        self.frames.get(i)
    }

    fn level(&mut self) -> Option<&mut Level> {
        match self.frames.last_mut() {
            Some(Frame::Component(l)) => Some(l),
            _ => None,
        }
    }

    fn module_rewritten(&self, index: u32) -> bool {
        match self.frames.last() {
            Some(Frame::Component(l)) => l.modules.get(index as usize).copied().unwrap_or(false),
            _ => false,
        }
    }

    fn component_rewritten(&self, index: u32) -> bool {
        match self.frames.last() {
            Some(Frame::Component(l)) => l.components.get(index as usize).copied().unwrap_or(false),
            _ => false,
        }
    }

    /// Records a new module or component index (imports, aliases, exports).
    fn define(&mut self, kind: ComponentExternalKind, rewritten: bool) {
        if let Some(level) = self.level() {
            match kind {
                ComponentExternalKind::Module => level.modules.push(rewritten),
                ComponentExternalKind::Component => level.components.push(rewritten),
                _ => {}
            }
        }
    }

    /// The five definitions each component level starts with.
    fn prefix(&self, component: &mut Component) {
        let mut types = ComponentTypeSection::new();
        let mut instance = InstanceType::new();
        let params: Vec<(String, wasm_encoder::ComponentValType)> = (0..WORDS_PER_FLUSH)
            .map(|i| (format!("e{i}"), PrimitiveValType::U64.into()))
            .collect();
        instance
            .ty()
            .function()
            .params(params.iter().map(|(n, t)| (n.as_str(), *t)))
            .result(None);
        instance.export(RECORDER_FLUSH, ComponentTypeRef::Func(0));
        types.instance(&instance);
        component.section(&types);

        let mut imports = ComponentImportSection::new();
        imports.import(RECORDER_IMPORT, ComponentTypeRef::Instance(0));
        component.section(&imports);

        let mut aliases = ComponentAliasSection::new();
        aliases.alias(Alias::InstanceExport {
            instance: 0,
            kind: ComponentExportKind::Func,
            name: RECORDER_FLUSH,
        });
        component.section(&aliases);

        let mut canon = CanonicalFunctionSection::new();
        canon.lower(0, []);
        component.section(&canon);

        let mut core = InstanceSection::new();
        core.export_items([(RECORDER_FLUSH, ExportKind::Func, 0)]);
        component.section(&core);
    }
}

impl Reencode for Rewriter<'_> {
    type Error = String;

    fn function_index(&mut self, func: u32) -> Result<u32, ReError<String>> {
        Ok(func.saturating_add(self.shift()))
    }
}

impl ReencodeComponent for Rewriter<'_> {
    fn component_type_index(&mut self, ty: u32) -> u32 {
        ty.saturating_add(self.shift())
    }

    fn component_instance_index(&mut self, i: u32) -> u32 {
        i.saturating_add(self.shift())
    }

    fn component_func_index(&mut self, f: u32) -> u32 {
        f.saturating_add(self.shift())
    }

    fn instance_index(&mut self, i: u32) -> u32 {
        i.saturating_add(self.shift())
    }

    fn outer_component_type_index(&mut self, count: u32, ty: u32) -> u32 {
        match self.outer(count) {
            Some(Frame::Component(_)) => ty + 1,
            _ => ty,
        }
    }

    fn push_depth(&mut self) {
        let frame = if std::mem::take(&mut self.next_is_component) {
            Frame::Component(Level::default())
        } else {
            Frame::TypeScope
        };
        self.frames.push(frame);
    }

    fn pop_depth(&mut self) {
        self.frames.pop();
    }

    fn parse_component_payload(
        &mut self,
        component: &mut Component,
        payload: Payload<'_>,
        whole: &[u8],
    ) -> Result<(), ReError<String>> {
        match &payload {
            Payload::Version { .. } => self.prefix(component),
            Payload::ComponentImportSection(s) => {
                for import in s.clone() {
                    let import = import?;
                    // Any version of the recorder interface.
                    if import.name.name.split('@').next() == RECORDER_IMPORT.split('@').next() {
                        let msg = format!(
                            "the component is already instrumented (it imports `{}`)",
                            import.name.name
                        );
                        self.error = Some(anyhow!("{msg}"));
                        return Err(ReError::UserError(msg));
                    }
                    match import.ty {
                        PTypeRef::Module(_) => self.define(ComponentExternalKind::Module, false),
                        PTypeRef::Component(_) => {
                            self.define(ComponentExternalKind::Component, false)
                        }
                        _ => {}
                    }
                }
            }
            Payload::ComponentAliasSection(s) => {
                for alias in s.clone() {
                    match alias? {
                        ComponentAlias::InstanceExport { kind, .. } => self.define(kind, false),
                        ComponentAlias::Outer { kind, count, index } => {
                            let rewritten = match self.outer(count) {
                                Some(Frame::Component(l)) => match kind {
                                    ComponentOuterAliasKind::CoreModule => {
                                        l.modules.get(index as usize).copied().unwrap_or(false)
                                    }
                                    ComponentOuterAliasKind::Component => {
                                        l.components.get(index as usize).copied().unwrap_or(false)
                                    }
                                    _ => false,
                                },
                                _ => false,
                            };
                            match kind {
                                ComponentOuterAliasKind::CoreModule => {
                                    self.define(ComponentExternalKind::Module, rewritten)
                                }
                                ComponentOuterAliasKind::Component => {
                                    self.define(ComponentExternalKind::Component, rewritten)
                                }
                                _ => {}
                            }
                        }
                        ComponentAlias::CoreInstanceExport { .. } => {}
                    }
                }
            }
            Payload::ComponentExportSection(s) => {
                for export in s.clone() {
                    let export = export?;
                    let rewritten = match export.kind {
                        ComponentExternalKind::Module => self.module_rewritten(export.index),
                        ComponentExternalKind::Component => self.component_rewritten(export.index),
                        _ => false,
                    };
                    self.define(export.kind, rewritten);
                }
            }
            _ => {}
        }
        component_utils::parse_component_payload(self, component, payload, whole)
    }

    fn parse_component_submodule(
        &mut self,
        component: &mut Component,
        _parser: Parser,
        wasm: &[u8],
    ) -> Result<(), ReError<String>> {
        let first_id = self.names.len() as u32;
        let rewritten = match module::instrument(
            wasm,
            self.options,
            Mode::Recorder { first_id },
            self.report,
        ) {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e.context("rewriting a core module of the component"));
                return Err(ReError::UserError(msg));
            }
        };
        let bytes = match rewritten {
            Some(r) => {
                self.names.extend(r.names);
                self.define(ComponentExternalKind::Module, true);
                r.bytes
            }
            None => {
                self.define(ComponentExternalKind::Module, false);
                wasm.to_vec()
            }
        };
        component.section(&RawSection {
            id: ComponentSectionId::CoreModule.into(),
            data: &bytes,
        });
        Ok(())
    }

    fn parse_component_subcomponent(
        &mut self,
        component: &mut Component,
        parser: Parser,
        data: &[u8],
        whole: &[u8],
    ) -> Result<(), ReError<String>> {
        self.next_is_component = true;
        component_utils::parse_component_subcomponent(self, component, parser, data, whole)?;
        self.define(ComponentExternalKind::Component, true);
        Ok(())
    }

    fn parse_instance(
        &mut self,
        instances: &mut InstanceSection,
        instance: wasmparser::Instance<'_>,
    ) -> Result<(), ReError<String>> {
        match instance {
            wasmparser::Instance::Instantiate { module_index, args }
                if self.module_rewritten(module_index) =>
            {
                let mut new: Vec<(&str, ModuleArg)> = args
                    .iter()
                    .map(|a| (a.name, ModuleArg::Instance(self.instance_index(a.index))))
                    .collect();
                new.push((RECORDER_IMPORT, ModuleArg::Instance(0)));
                instances.instantiate(self.module_index(module_index), new);
                Ok(())
            }
            other => component_utils::parse_instance(self, instances, other),
        }
    }

    fn parse_component_instance(
        &mut self,
        instances: &mut ComponentInstanceSection,
        instance: wasmparser::ComponentInstance<'_>,
    ) -> Result<(), ReError<String>> {
        match instance {
            wasmparser::ComponentInstance::Instantiate {
                component_index,
                args,
            } if self.component_rewritten(component_index) => {
                let mut new: Vec<(&str, ComponentExportKind, u32)> = args
                    .iter()
                    .map(|a| {
                        (
                            a.name,
                            a.kind.into(),
                            self.component_external_index(a.kind, a.index),
                        )
                    })
                    .collect();
                new.push((RECORDER_IMPORT, ComponentExportKind::Instance, 0));
                instances.instantiate(self.component_index(component_index), new);
                Ok(())
            }
            other => component_utils::parse_component_instance(self, instances, other),
        }
    }
}
