//! Rewriting one core module (see the crate documentation for the design).

use std::collections::HashMap;

use anyhow::{Result, bail};
use wasm_encoder::reencode::{Error as ReError, Reencode, utils};
use wasm_encoder::{
    BlockType, Catch, CodeSection, ConstExpr, EntityType, Function, FunctionSection, GlobalSection,
    GlobalType, ImportSection, MemArg, MemArgTarget, MemorySection, MemoryType, Module, SectionId,
    TypeSection, ValType,
};
use wasmparser::{
    CompositeInnerType, FunctionBody, KnownCustom, Name, Operator, Parser, Payload, TypeRef,
};

use crate::names::{demangle, unnamed};
use crate::{
    EVENTS_PER_FLUSH, Event, HOOKS_MODULE, MAX_EVENT_VALUE, MAX_SLOT_VALUE, Options,
    RECORDER_FLUSH, RECORDER_IMPORT, Report, SLOT_BITS, SLOTS_PER_WORD, WORDS_PER_FLUSH,
};

/// How a rewritten module reports events.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// One host call per event (Dylibso's ABI); ids are function indices.
    Hooks,
    /// An in-module recorder flushing batches; ids are numbered from
    /// `first_id` across a component.
    Recorder { first_id: u32 },
}

/// A rewritten module and, for recorders, the names of the ids it uses
/// (`first_id`, `first_id + 1`, ...).
pub(crate) struct Rewritten {
    pub bytes: Vec<u8>,
    pub names: Vec<String>,
}

type Sig = (Vec<wasmparser::ValType>, Vec<wasmparser::ValType>);

/// What the first pass learns about the module.
#[derive(Default)]
struct Info {
    /// Every type index; `None` for non-function types.
    types: Vec<Option<Sig>>,
    /// The type of every function, imported ones first.
    funcs: Vec<u32>,
    imported_funcs: u32,
    /// Whether each memory (imported ones first) is 64-bit.
    memory64: Vec<bool>,
    globals: u32,
    /// The module defines or imports a tag, so exceptions can unwind it.
    can_throw: bool,
    names: HashMap<u32, String>,
    /// Functions exported as `cabi_*` (the canonical ABI's `realloc` and
    /// `post-return` functions), which run while the component may not call
    /// imports.
    cabi: std::collections::HashSet<u32>,
}

impl Info {
    fn gather(wasm: &[u8]) -> Result<Info> {
        let mut info = Info::default();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload? {
                Payload::TypeSection(r) => {
                    for group in r {
                        for sub in group?.into_types() {
                            info.types.push(match sub.composite_type.inner {
                                CompositeInnerType::Func(f) => {
                                    Some((f.params().to_vec(), f.results().to_vec()))
                                }
                                _ => None,
                            });
                        }
                    }
                }
                Payload::ImportSection(r) => {
                    for import in r.into_imports() {
                        let import = import?;
                        if import.module == HOOKS_MODULE
                            || import.module == "dylibso_observe"
                            || import.module == RECORDER_IMPORT
                            || import
                                .module
                                .starts_with("wasi-observe:instrument/recorder@")
                        {
                            bail!(
                                "the module is already instrumented (it imports `{}`)",
                                import.module
                            );
                        }
                        match import.ty {
                            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                                info.funcs.push(t);
                                info.imported_funcs += 1;
                            }
                            TypeRef::Memory(m) => info.memory64.push(m.memory64),
                            TypeRef::Global(_) => info.globals += 1,
                            TypeRef::Tag(_) => info.can_throw = true,
                            TypeRef::Table(_) => {}
                        }
                    }
                }
                Payload::FunctionSection(r) => {
                    for t in r {
                        info.funcs.push(t?);
                    }
                }
                Payload::MemorySection(r) => {
                    for m in r {
                        info.memory64.push(m?.memory64);
                    }
                }
                Payload::GlobalSection(r) => info.globals += r.count(),
                Payload::ExportSection(r) => {
                    for e in r {
                        let e = e?;
                        if e.kind == wasmparser::ExternalKind::Func && e.name.starts_with("cabi_") {
                            info.cabi.insert(e.index);
                        }
                    }
                }
                Payload::TagSection(r) => info.can_throw |= r.count() > 0,
                Payload::CustomSection(c) => {
                    if let KnownCustom::Name(reader) = c.as_known() {
                        for sub in reader {
                            if let Ok(Name::Function(map)) = sub {
                                for n in map.into_iter().flatten() {
                                    info.names.insert(n.index, n.name.to_string());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    fn sig(&self, func: u32) -> Result<&Sig> {
        let ty = self.funcs.get(func as usize).copied();
        match ty.and_then(|t| self.types.get(t as usize)) {
            Some(Some(sig)) => Ok(sig),
            _ => bail!("function {func} has no function type"),
        }
    }
}

/// Rewrites `wasm`; `None` if it defines no function (nothing to do).
pub(crate) fn instrument(
    wasm: &[u8],
    options: &Options,
    mode: Mode,
    report: &mut Report,
) -> Result<Option<Rewritten>> {
    let info = Info::gather(wasm)?;
    let defined = info.funcs.len() as u32 - info.imported_funcs;
    if defined == 0 {
        return Ok(None);
    }
    let mut r = Rewriter::new(&info, options, mode);
    let mut module = Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(crate::reencode_error)?;
    if r.next_body != defined {
        bail!("the code section does not match the function section");
    }
    report.modules += 1;
    report.functions += r.instrumented;
    report.skipped += r.skipped;
    Ok(Some(Rewritten {
        bytes: module.finish(),
        names: r.names,
    }))
}

/// Sections the rewrite may have to create when the module lacks them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Added {
    Import,
    Memory,
    Global,
}

/// Where a section goes in a module (the binary format's order).
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Custom => 0,
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
    }
}

impl Added {
    fn rank(self) -> u8 {
        match self {
            Added::Import => rank(SectionId::Import),
            Added::Memory => rank(SectionId::Memory),
            Added::Global => rank(SectionId::Global),
        }
    }
}

struct Rewriter<'a> {
    info: &'a Info,
    options: &'a Options,
    mode: Mode,
    /// Functions imported by the rewrite (they shift defined functions).
    added_imports: u32,
    /// Sections still to be written (or extended).
    pending: Vec<Added>,
    /// New types: `(param i32)`, `()`, the flush signature, and block types
    /// of multi-value results.
    t_i32: u32,
    t_empty: u32,
    t_flush: u32,
    multi: HashMap<Vec<wasmparser::ValType>, u32>,
    /// Function indices (new numbering) of enter, exit, memory-grow; and
    /// of the recorder's `high` helper (records a value's high bits).
    enter: u32,
    exit: u32,
    grow: u32,
    high: u32,
    /// Recorder: the imported flush and the helper that flushes if events
    /// are pending; its memory and globals.
    import_flush: u32,
    flush: u32,
    memory: u32,
    pos: u32,
    depth: u32,
    /// Non-zero while a `cabi_*` export runs: the recorder neither records
    /// nor flushes (the canonical ABI forbids calling imports then).
    quiet: u32,
    next_body: u32,
    next_id: u32,
    names: Vec<String>,
    instrumented: usize,
    skipped: usize,
}

impl<'a> Rewriter<'a> {
    fn new(info: &'a Info, options: &'a Options, mode: Mode) -> Self {
        let recorder = matches!(mode, Mode::Recorder { .. });
        let added_imports = if recorder { 1 } else { 3 };
        let n_types = info.types.len() as u32;
        let mut multi = HashMap::new();
        let mut next_type = n_types + 3;
        for f in info.imported_funcs..info.funcs.len() as u32 {
            if let Ok((_, results)) = info.sig(f)
                && results.len() > 1
                && !multi.contains_key(results)
            {
                multi.insert(results.clone(), next_type);
                next_type += 1;
            }
        }
        let imp = info.imported_funcs;
        let total = info.funcs.len() as u32 + added_imports;
        let mut pending = vec![Added::Import];
        if recorder {
            pending.extend([Added::Memory, Added::Global]);
        }
        Rewriter {
            info,
            options,
            mode,
            added_imports,
            pending,
            t_i32: n_types,
            t_empty: n_types + 1,
            t_flush: n_types + 2,
            multi,
            // Hooks: three imports after the module's own. Recorder: one
            // import, and helpers after the module's functions.
            enter: if recorder { total } else { imp },
            exit: if recorder { total + 1 } else { imp + 1 },
            grow: if recorder { total + 2 } else { imp + 2 },
            import_flush: imp,
            flush: total + 3,
            high: total + 4,
            memory: info.memory64.len() as u32,
            pos: info.globals,
            depth: info.globals + 1,
            quiet: info.globals + 2,
            next_body: 0,
            next_id: match mode {
                Mode::Recorder { first_id } => first_id,
                Mode::Hooks => 0,
            },
            names: Vec::new(),
            instrumented: 0,
            skipped: 0,
        }
    }

    fn recorder(&self) -> bool {
        matches!(self.mode, Mode::Recorder { .. })
    }

    fn take(&mut self, what: Added) -> bool {
        let before = self.pending.len();
        self.pending.retain(|&a| a != what);
        self.pending.len() != before
    }

    fn add_imports(&mut self, imports: &mut ImportSection) {
        if self.recorder() {
            imports.import(
                RECORDER_IMPORT,
                RECORDER_FLUSH,
                EntityType::Function(self.t_flush),
            );
        } else {
            for name in ["enter", "exit", "memory-grow"] {
                imports.import(HOOKS_MODULE, name, EntityType::Function(self.t_i32));
            }
        }
    }

    fn add_memories(&mut self, memories: &mut MemorySection) {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: Some(1),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }

    fn add_globals(&mut self, globals: &mut GlobalSection) {
        for _ in 0..3 {
            globals.global(
                GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(0),
            );
        }
    }

    fn block_type(
        &mut self,
        results: &[wasmparser::ValType],
    ) -> Result<BlockType, ReError<String>> {
        Ok(match results {
            [] => BlockType::Empty,
            [one] => BlockType::Result(self.val_type(*one)?),
            many => BlockType::FunctionType(self.multi[many]),
        })
    }

    /// The function's body, rewritten.
    fn body(&mut self, func: &FunctionBody<'_>) -> Result<Function, ReError<String>> {
        let index = self.info.imported_funcs + self.next_body;
        self.next_body += 1;
        let (params, results) = self
            .info
            .sig(index)
            .map_err(|e| ReError::UserError(e.to_string()))?
            .clone();
        let name = match self.info.names.get(&index) {
            Some(n) => demangle(n),
            None => unnamed(index),
        };
        // `cabi_*` exports are not spans: they silence the recorder while
        // they run (entered and exited like instrumented functions).
        let guarded = self.recorder() && self.info.cabi.contains(&index);
        let selected = !guarded && self.options.selects(&name);
        let wrapped = selected || guarded;
        let id = match self.mode {
            Mode::Hooks => index + self.added_imports,
            Mode::Recorder { .. } if selected => {
                if self.next_id > MAX_EVENT_VALUE {
                    return Err(ReError::UserError("too many functions".into()));
                }
                self.names.push(name);
                self.next_id += 1;
                self.next_id - 1
            }
            Mode::Recorder { .. } => 0,
        };
        if selected {
            self.instrumented += 1;
        } else {
            self.skipped += 1;
        }
        // Recorder events whose id needs more than one slot record a
        // `high` slot first (ids beyond 2^19, rare).
        let (enter_arg, exit_arg) = match self.mode {
            Mode::Hooks => ((None, id as i32), (None, id as i32)),
            Mode::Recorder { .. } => {
                let slots = |e: Event| {
                    let (high, slot) = e.encode();
                    (high.map(|h| h as i32), slot as i32)
                };
                (slots(Event::Enter(id)), slots(Event::Exit(id)))
            }
        };

        let mut locals = Vec::new();
        let mut n_locals = params.len() as u32;
        for pair in func.get_locals_reader()? {
            let (count, ty) = pair?;
            n_locals += count;
            locals.push((count, self.val_type(ty)?));
        }
        let grows = {
            let mut ops = func.get_operators_reader()?;
            let mut found = false;
            while !ops.eof() {
                if let Operator::MemoryGrow { .. } = ops.read()? {
                    found = true;
                    break;
                }
            }
            found
        };
        let (scratch32, scratch64) = (n_locals, n_locals + 1);
        if grows {
            locals.push((1, ValType::I32));
            locals.push((1, ValType::I64));
        }
        let mut f = Function::new(locals);
        let throws = wrapped && self.info.can_throw;
        let bt = Rewriter::block_type(self, &results)?;
        let quiet = self.quiet;
        let (enter, exit, high) = (self.enter, self.exit, self.high);
        let event = |f: &mut Function, (high_slot, slot): (Option<i32>, i32), helper: u32| {
            let mut s = f.instructions();
            if let Some(h) = high_slot {
                s.i32_const(h).call(high);
            }
            s.i32_const(slot).call(helper);
        };
        let on_exit = |f: &mut Function| {
            if guarded {
                f.instructions()
                    .global_get(quiet)
                    .i32_const(1)
                    .i32_sub()
                    .global_set(quiet);
            } else {
                event(f, exit_arg, exit);
            }
        };
        if wrapped {
            if guarded {
                f.instructions()
                    .global_get(quiet)
                    .i32_const(1)
                    .i32_add()
                    .global_set(quiet);
            } else {
                event(&mut f, enter_arg, enter);
            }
            let mut s = f.instructions();
            s.block(bt);
            if throws {
                s.block(BlockType::Result(ValType::EXNREF))
                    .try_table(bt, [Catch::AllRef { label: 0 }]);
            }
        }
        let mut ops = func.get_operators_reader()?;
        while !ops.eof() {
            let op = ops.read()?;
            let last = ops.eof();
            match op {
                Operator::Return if wrapped => {
                    on_exit(&mut f);
                    f.instructions().return_();
                }
                Operator::ReturnCall { function_index } if self.is_import(function_index) => {
                    if wrapped {
                        on_exit(&mut f);
                    }
                    if self.recorder() {
                        f.instructions().call(self.flush);
                    }
                    f.instruction(&self.instruction(op)?);
                }
                Operator::ReturnCall { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::ReturnCallRef { .. }
                    if wrapped =>
                {
                    on_exit(&mut f);
                    f.instruction(&self.instruction(op)?);
                }
                Operator::Call { function_index }
                    if self.recorder() && self.is_import(function_index) =>
                {
                    f.instructions().call(self.flush);
                    f.instruction(&self.instruction(op)?);
                }
                Operator::MemoryGrow { mem } => {
                    let is64 = self
                        .info
                        .memory64
                        .get(mem as usize)
                        .copied()
                        .unwrap_or(false);
                    let mut s = f.instructions();
                    if is64 {
                        s.local_tee(scratch64).i32_wrap_i64();
                    } else {
                        s.local_tee(scratch32);
                    }
                    s.call(self.grow)
                        .local_get(if is64 { scratch64 } else { scratch32 });
                    f.instruction(&self.instruction(op)?);
                }
                Operator::End if last && wrapped => {
                    // Closes the try_table, or the block.
                    f.instructions().end();
                    if throws {
                        // Normal completion: on to the block's exit.
                        f.instructions().br(1).end();
                        // An exception: exit, and let it go on.
                        on_exit(&mut f);
                        f.instructions().throw_ref().end();
                    }
                    on_exit(&mut f);
                    f.instructions().end();
                }
                _ => {
                    f.instruction(&self.instruction(op)?);
                }
            }
        }
        Ok(f)
    }

    fn is_import(&self, original_index: u32) -> bool {
        original_index < self.info.imported_funcs
    }

    /// Recorder helpers, in the order of their indices: enter, exit,
    /// memory-grow, flush, high.
    fn helpers(&self) -> [Function; 5] {
        let mem = MemArg {
            offset: 0,
            align: 2,
            target: MemArgTarget::Memory(self.memory),
            ordering: None,
        };
        let full = (EVENTS_PER_FLUSH * 4) as i32;
        // Appends the slot in local `event` to the buffer (local 1 is
        // scratch); flushes when full.
        let record = |f: &mut Function, event: u32| {
            let mut s = f.instructions();
            s.global_get(self.pos)
                .local_tee(1)
                .local_get(event)
                .i32_store(mem)
                .local_get(1)
                .i32_const(4)
                .i32_add()
                .local_tee(1)
                .global_set(self.pos)
                .local_get(1)
                .i32_const(full)
                .i32_eq()
                .if_(BlockType::Empty)
                .call(self.flush)
                .end();
        };
        // While quiet, the helpers do nothing at all.
        let unless_quiet = |f: &mut Function| {
            f.instructions()
                .global_get(self.quiet)
                .if_(BlockType::Empty)
                .return_()
                .end();
        };
        let mut enter = Function::new([(1, ValType::I32)]);
        unless_quiet(&mut enter);
        enter
            .instructions()
            .global_get(self.depth)
            .i32_const(1)
            .i32_add()
            .global_set(self.depth);
        record(&mut enter, 0);
        enter.instructions().end();

        let mut exit = Function::new([(1, ValType::I32)]);
        unless_quiet(&mut exit);
        record(&mut exit, 0);
        exit.instructions()
            .global_get(self.depth)
            .i32_const(1)
            .i32_sub()
            .local_tee(1)
            .global_set(self.depth)
            .local_get(1)
            .i32_const(1)
            .i32_lt_s()
            .if_(BlockType::Empty)
            .i32_const(0)
            .global_set(self.depth)
            .call(self.flush)
            .end()
            .end();

        // Pages (local 0) saturate at MAX_EVENT_VALUE; above MAX_SLOT_VALUE
        // a `high` slot goes first. Local 2 holds the slot recorded.
        let mut grow = Function::new([(2, ValType::I32)]);
        unless_quiet(&mut grow);
        grow.instructions()
            .i32_const(MAX_EVENT_VALUE as i32)
            .local_get(0)
            .local_get(0)
            .i32_const(MAX_EVENT_VALUE as i32)
            .i32_gt_u()
            .select()
            .local_tee(0)
            .i32_const(MAX_SLOT_VALUE as i32)
            .i32_gt_u()
            .if_(BlockType::Empty)
            .local_get(0)
            .i32_const((SLOT_BITS - 2) as i32)
            .i32_shr_u()
            .i32_const(2)
            .i32_shl()
            .local_set(2);
        record(&mut grow, 2);
        grow.instructions()
            .end()
            .local_get(0)
            .i32_const(MAX_SLOT_VALUE as i32)
            .i32_and()
            .i32_const(2)
            .i32_shl()
            .i32_const(3)
            .i32_or()
            .local_set(2);
        record(&mut grow, 2);
        grow.instructions().end();

        let mut flush = Function::new([]);
        unless_quiet(&mut flush);
        let mut s = flush.instructions();
        s.global_get(self.pos)
            .i32_eqz()
            .if_(BlockType::Empty)
            .return_()
            .end()
            // Unused slots read as padding.
            .global_get(self.pos)
            .i32_const(0)
            .i32_const(full)
            .global_get(self.pos)
            .i32_sub()
            .memory_fill(self.memory)
            .i32_const(0)
            .global_set(self.pos);
        // Word k holds slots 3k (low bits), 3k + 1 and 3k + 2.
        for k in 0..WORDS_PER_FLUSH as u64 {
            for j in 0..SLOTS_PER_WORD as u64 {
                s.i32_const(0).i64_load32_u(MemArg {
                    offset: (k * SLOTS_PER_WORD as u64 + j) * 4,
                    align: 2,
                    target: MemArgTarget::Memory(self.memory),
                    ordering: None,
                });
                if j > 0 {
                    s.i64_const(i64::from(SLOT_BITS) * j as i64)
                        .i64_shl()
                        .i64_or();
                }
            }
        }
        s.call(self.import_flush).end();

        // Records a `high` slot (the param) before an event whose value
        // does not fit in one.
        let mut high = Function::new([(1, ValType::I32)]);
        unless_quiet(&mut high);
        record(&mut high, 0);
        high.instructions().end();
        [enter, exit, grow, flush, high]
    }
}

impl Reencode for Rewriter<'_> {
    type Error = String;

    fn function_index(&mut self, func: u32) -> Result<u32, ReError<String>> {
        if func < self.info.imported_funcs {
            return Ok(func);
        }
        // Validated code never overflows; a name section (not validated)
        // may name any index, and a name for a function that cannot exist
        // stays one.
        Ok(func.saturating_add(self.added_imports))
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_type_section(self, types, section)?;
        types.ty().function([ValType::I32], []);
        types.ty().function([], []);
        types.ty().function([ValType::I64; WORDS_PER_FLUSH], []);
        let mut multi: Vec<_> = self.multi.iter().map(|(r, i)| (*i, r.clone())).collect();
        multi.sort_by_key(|(i, _)| *i);
        for (_, results) in multi {
            let results = results
                .into_iter()
                .map(|t| self.val_type(t))
                .collect::<Result<Vec<_>, _>>()?;
            types.ty().function([], results);
        }
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_import_section(self, imports, section)?;
        if self.take(Added::Import) {
            self.add_imports(imports);
        }
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_memory_section(self, memories, section)?;
        if self.take(Added::Memory) {
            self.add_memories(memories);
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_global_section(self, globals, section)?;
        if self.take(Added::Global) {
            self.add_globals(globals);
        }
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_function_section(self, functions, section)?;
        if self.recorder() {
            for t in [self.t_i32, self.t_i32, self.t_i32, self.t_empty, self.t_i32] {
                functions.function(t);
            }
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        utils::parse_code_section(self, code, section)?;
        if self.recorder() {
            for f in self.helpers() {
                code.function(&f);
            }
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), ReError<String>> {
        let f = self.body(&func)?;
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), ReError<String>> {
        // DWARF describes code offsets the rewrite has moved: drop it rather
        // than ship wrong debug information.
        if section.name().starts_with(".debug_") {
            return Ok(());
        }
        // The name section is not validated: a malformed one (names are
        // decoration) is dropped rather than failing the rewrite. It is
        // built whole before it is written, so a failure writes nothing.
        if section.name() == "name" {
            let _ = utils::parse_custom_section(self, module, section);
            return Ok(());
        }
        utils::parse_custom_section(self, module, section)
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), ReError<String>> {
        let after = after.map_or(0, rank);
        let before = before.map_or(u8::MAX, rank);
        for what in self.pending.clone() {
            if after < what.rank() && what.rank() < before {
                self.take(what);
                match what {
                    Added::Import => {
                        let mut s = ImportSection::new();
                        self.add_imports(&mut s);
                        module.section(&s);
                    }
                    Added::Memory => {
                        let mut s = MemorySection::new();
                        self.add_memories(&mut s);
                        module.section(&s);
                    }
                    Added::Global => {
                        let mut s = GlobalSection::new();
                        self.add_globals(&mut s);
                        module.section(&s);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_SLOT_VALUE;

    /// Ids beyond one slot record a `high` slot first, at entry and on every
    /// way out; ids within one slot do not.
    #[test]
    fn large_ids_record_a_high_slot() {
        let wasm = wat::parse_str(include_str!("../tests/features.wat")).unwrap();
        let first_id = MAX_SLOT_VALUE - 1;
        let mut report = Report::default();
        let out = instrument(
            &wasm,
            &Options::default(),
            Mode::Recorder { first_id },
            &mut report,
        )
        .unwrap()
        .unwrap();
        wasmparser::Validator::new_with_features(crate::features())
            .validate_all(&out.bytes)
            .unwrap();
        assert_eq!(out.names.len(), 10);
        let (mut funcs, mut bodies) = (0, Vec::new());
        for p in Parser::new(0).parse_all(&out.bytes) {
            match p.unwrap() {
                Payload::ImportSection(r) => {
                    for i in r.into_imports() {
                        if let TypeRef::Func(_) = i.unwrap().ty {
                            funcs += 1;
                        }
                    }
                }
                Payload::FunctionSection(r) => funcs += r.count(),
                Payload::CodeSectionEntry(body) => bodies.push(body),
                _ => {}
            }
        }
        // The helpers come last, `high` the very last.
        let high = funcs - 1;
        let with_high: Vec<usize> = bodies
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                let mut ops = b.get_operators_reader().unwrap();
                std::iter::from_fn(|| (!ops.eof()).then(|| ops.read().unwrap())).any(
                    |op| matches!(op, Operator::Call { function_index } if function_index == high),
                )
            })
            .map(|(i, _)| i)
            .collect();
        // The first two functions have ids MAX_SLOT_VALUE - 1 and
        // MAX_SLOT_VALUE; the other eight need a `high` slot. (The `grow`
        // helper calls `high`'s recording inline, not `high` itself.)
        assert_eq!(with_high, (2..10).collect::<Vec<_>>());
    }
}
