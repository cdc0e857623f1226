//! Exact instruction counting without a per-instruction hook, and the state the C hooks share.
//!
//! A single block hook (which Unicorn inlines into the generated code) runs at the start of
//! every translation block. It commits the previous block in full, takes the QEMU block
//! about to run (the patched Unicorn stores it for the hook) and remembers it with its
//! instruction count. Wherever a block is cut short
//! (an exception, a stop from an I/O hook, QEMU's self-modifying-code restart) the cut
//! point's index inside the block is read from QEMU's per-instruction search data, so the
//! count is exact at every instruction. When the next block would overrun the budget the
//! run stops before it and resumes with a block limited to the remaining count
//! (`cflags_next_tb`), so the budget ends exactly; only that last block is shortened.
//!
//! A count-limited block may retire nothing: when its first instruction faults, the
//! exception is delivered and the handler's first block may again be longer than the
//! budget left, so the run stops at the handler's entry with the same count and runs a
//! second limited block there. That is progress (an exception was delivered), not a limit
//! QEMU ignored; the only place a limit can be ignored is the first block of the limited
//! run, which is checked right there (docs/notes-emu-exception-budget.md).
//!
//! REP-prefixed string instructions count once per iteration, as QEMU's icount does.

use std::any::Any;
use std::ptr::NonNull;

use unicorn_engine::uc_engine;

use super::internals::{Cpu, Tb, CF_COUNT_MASK};
use crate::vcpu::GuestIo;

/// Why the current `uc_emu_start` should end (set before calling `uc_emu_stop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    /// The budget is spent exactly.
    Budget,
    /// The next block is longer than the rest of the budget: rerun limited to `n`.
    Partial(u32),
    /// A device write asked to stop; the instruction was rewound and must be replayed.
    IoStopRewound,
    /// The replayed instruction completed.
    IoStopDone,
    /// An external interrupt was delivered (or its delivery faulted and that was delivered).
    Injected,
    /// Delivery needs a TSS that is not there: the CPU would shut down.
    TripleFault,
    Error(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    /// Re-execute one rewound I/O instruction, feeding it the values it already saw.
    Replay {
        started: bool,
    },
    /// Deliver external interrupt `vector` before the instruction at RIP. `cr2` is CR2
    /// before the run, restored if fetching that instruction faulted first.
    Inject {
        vector: u8,
        cr2: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AccessKind {
    PioIn,
    PioOut,
    MmioRead,
    MmioWrite,
}

/// One device access of the instruction being executed, for replay after a rewind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Access {
    pub kind: AccessKind,
    pub addr: u64,
    pub size: u32,
    pub value: u64,
}

#[derive(Clone, Copy)]
pub(super) struct CurTb {
    tb: Tb,
    pc: u64,
    pub icount: u32,
}

/// The count the generated code keeps itself (`struct uc_detvm_counter` of the patched
/// Unicorn, vendor/unicorn-engine-sys/PATCHES.md). A block starts without calling the
/// block hook while `committed + cur_icount + its icount <= limit` and no exit is
/// requested: it adds `cur_icount` to `committed` and becomes the current block, which is
/// exactly what [`HookState::on_block_start`] does in its common case. `limit` is 0
/// whenever the hook must see every block.
#[repr(C)]
#[derive(Default)]
pub(super) struct Counter {
    /// Instructions retired in this run before the current block.
    pub committed: u64,
    /// The current block's instruction count; 0 when there is none.
    cur_icount: u64,
    limit: u64,
    cur_tb: u64,
    cur_pc: u64,
}

impl CurTb {
    /// The block, unless a TB flush has reused its memory since (then it had completed:
    /// QEMU only flushes between blocks).
    pub fn tb(&self) -> Option<Tb> {
        Some(self.tb).filter(|t| t.pc() == self.pc && t.icount() == self.icount)
    }
}

/// Everything the C callbacks see, through their `user_data` pointer.
pub(super) struct HookState {
    pub uc: *mut uc_engine,
    pub cpu: Cpu,
    /// Where Unicorn publishes the TB of the running block hook (see `internals`).
    pub hook_tb_slot: *const *const u8,
    /// The `GuestIo` of the `run` in progress. SAFETY contract: set by `run` right before
    /// `uc_emu_start` and cleared before `run` returns; hooks only fire inside it.
    pub io: Option<NonNull<dyn GuestIo>>,
    pub vcpu_index: u32,
    pub vcpu_count: u32,
    /// Instructions retired in this run (`committed`) and the block running now, not yet
    /// added to it (see `cur`). Shared with the generated code: keep it in this boxed state.
    pub counter: Counter,
    pub budget: u64,
    /// Compile flags the run loop forced on the first block of this `uc_emu_start`.
    pub forced_cflags: u32,
    pub stop: Option<Stop>,
    pub mode: Mode,
    /// Device accesses of instruction number `log_insn` (see [`Access`]).
    pub log_insn: u64,
    pub log: Vec<Access>,
    pub replay_pos: usize,
    /// A panic from the core's `GuestIo`, re-raised once `uc_emu_start` has returned.
    pub panic: Option<Box<dyn Any + Send>>,
    /// Exceptions delivered in a row while `committed` stayed at `stuck_at` (an exception
    /// loop that retires nothing would otherwise never end the run).
    pub deliveries_stuck: u32,
    pub stuck_at: u64,
    /// A count-limited run is being asked again after QEMU lost its limit to a code
    /// buffer flush (see `on_block_start`).
    pub limit_retried: bool,
}

impl HookState {
    pub fn new(uc: *mut uc_engine, cpu: Cpu, vcpu_count: u32) -> Self {
        HookState {
            uc,
            cpu,
            // SAFETY: only returns the address of a field of the open engine.
            hook_tb_slot: unsafe { super::internals::uc_detvm_block_hook_tb_slot(uc.cast()) },
            io: None,
            vcpu_index: 0,
            vcpu_count,
            counter: Counter::default(),
            budget: 0,
            forced_cflags: 0,
            stop: None,
            mode: Mode::Normal,
            log_insn: u64::MAX,
            log: Vec::new(),
            replay_pos: 0,
            panic: None,
            deliveries_stuck: 0,
            stuck_at: u64::MAX,
            limit_retried: false,
        }
    }

    /// Call right before anything that may longjmp out of a hook: makes every store to the
    /// state so far happen now. (Without it the optimiser may keep them in registers or
    /// sink them past a call that, as far as it knows, cannot see this `&mut`.)
    pub fn commit_stores(&mut self) {
        std::hint::black_box(&mut *self);
    }

    /// The block running now, not yet added to `counter.committed`.
    pub fn cur(&self) -> Option<CurTb> {
        let c = &self.counter;
        (c.cur_icount != 0).then(|| CurTb {
            tb: Tb::from_addr(c.cur_tb),
            pc: c.cur_pc,
            icount: c.cur_icount as u32,
        })
    }

    pub fn set_cur(&mut self, cur: Option<CurTb>) {
        let c = &mut self.counter;
        (c.cur_tb, c.cur_pc, c.cur_icount) = match cur {
            Some(t) => (t.tb.addr(), t.pc, t.icount as u64),
            None => (0, 0, 0),
        };
    }

    pub fn take_cur(&mut self) -> Option<CurTb> {
        let cur = self.cur();
        self.set_cur(None);
        cur
    }

    /// Lets blocks start without the hook only where the hook would just count them: a
    /// normal run, past a count-limited first block, with no stop requested.
    pub fn sync_fast_limit(&mut self) {
        let plain = self.mode == Mode::Normal && self.forced_cflags == 0 && self.stop.is_none();
        self.counter.limit = if plain { self.budget } else { 0 };
    }

    /// Ends this `uc_emu_start` at the next exit check (block start or after a memory access).
    pub fn request_stop(&mut self, why: Stop) {
        if self.stop.is_none() || matches!(why, Stop::Error(_)) {
            self.stop = Some(why);
        }
        self.counter.limit = 0;
        // SAFETY: `uc` is the open engine; uc_emu_stop only sets flags.
        unsafe { unicorn_engine::uc_emu_stop(self.uc) };
    }

    /// Instructions retired in this run before the instruction at guest `pc` (which belongs
    /// to the current block).
    pub fn insns_at_pc(&self, pc: u64) -> u64 {
        self.counter.committed
            + self
                .cur()
                .and_then(|c| c.tb()?.index_of_pc(pc))
                .unwrap_or(0) as u64
    }

    /// As [`Self::insns_at_pc`] for an instruction known by the host return address of a
    /// memory access (`mem_io_pc`), where QEMU has not synced RIP.
    pub fn insns_at_host_pc(&self, host_pc: usize) -> u64 {
        self.counter.committed
            + self
                .cur()
                .and_then(|c| c.tb()?.index_of_host_pc(host_pc))
                .unwrap_or(0) as u64
    }

    /// The current block ends before the instruction at `pc` (a fault, a rewind) or, when
    /// `pc` is not one of its instructions, after its last one.
    pub fn cut_current_block_at(&mut self, pc: u64) {
        if let Some(c) = self.take_cur() {
            let done = c.tb().and_then(|t| t.index_of_pc(pc));
            self.counter.committed += done.unwrap_or(c.icount) as u64;
        }
    }

    /// The block hook: see the module documentation. Returns the external interrupt to
    /// deliver before this block runs (`Mode::Inject`); the caller delivers it.
    pub fn on_block_start(&mut self, pc: u64, size: u32) -> Option<u8> {
        let inject = self.count_block_start(pc, size);
        self.sync_fast_limit();
        inject
    }

    fn count_block_start(&mut self, pc: u64, size: u32) -> Option<u8> {
        let forced = std::mem::take(&mut self.forced_cflags);
        // SAFETY: the slot belongs to this engine and this is its block hook.
        let found = unsafe { super::internals::hooked_tb(self.hook_tb_slot, pc, size) }
            .or_else(|| self.cpu.current_tb(pc, size, forced));
        if let Some(prev) = self.take_cur() {
            // A block QEMU limited to one instruction without us asking is its restart after
            // self-modifying code: the previous block ended before that instruction.
            let restarted = forced == 0 && found.is_some_and(|t| t.cflags() & CF_COUNT_MASK == 1);
            let done = if restarted {
                prev.tb()
                    .and_then(|t| t.index_of_pc(pc))
                    .unwrap_or(prev.icount)
            } else {
                prev.icount
            };
            self.counter.committed += done as u64;
        }
        if self.stop.is_some() || self.cpu.exit_requested() {
            return None; // this block will not start
        }
        let limit = forced & CF_COUNT_MASK;
        if let Some(tb) = found.filter(|t| limit != 0 && t.icount() > limit) {
            // The first block of a count-limited run is longer than the limit: QEMU's code
            // buffer was full when it translated the limited block, so it flushed every
            // block and restarted its loop without the limit. Nothing has run yet; ask
            // again (a flushed buffer has room). A second refusal is a real Unicorn change.
            if !std::mem::replace(&mut self.limit_retried, true) {
                self.request_stop(Stop::Partial(limit));
                return None;
            }
            let icount = tb.icount();
            self.request_stop(Stop::Error(format!(
                "a count-limited block did not shorten (cflags_next_tb): {icount} \
                 instructions at {pc:#x}, limit {limit}"
            )));
            return None;
        }
        if limit != 0 {
            self.limit_retried = false;
        }
        match self.mode {
            Mode::Inject { vector, .. } => return Some(vector),
            Mode::Replay { started: true } => {
                self.request_stop(Stop::IoStopDone);
                return None;
            }
            Mode::Replay { started: false } => self.mode = Mode::Replay { started: true },
            Mode::Normal => {}
        }
        let Some(tb) = found else {
            self.request_stop(Stop::Error(format!(
                "no translation block found for the block at {pc:#x} ({size} bytes): \
                 instruction counting lost track"
            )));
            return None;
        };
        let icount = tb.icount();
        let left = self.budget.saturating_sub(self.counter.committed);
        if icount as u64 > left {
            let why = if left == 0 {
                Stop::Budget
            } else {
                Stop::Partial(left as u32)
            };
            self.request_stop(why);
            return None;
        }
        self.set_cur(Some(CurTb { tb, pc, icount }));
        None
    }

    /// Records a device access of instruction number `insn`, or, while replaying, returns
    /// the recorded one it repeats (`Some(value)`: do not forward it to the device).
    pub fn log_access(&mut self, insn: u64, a: Access) -> Option<u64> {
        if let Mode::Replay { .. } = self.mode {
            let next = self.log.get(self.replay_pos).copied();
            if let Some(r) =
                next.filter(|r| r.kind == a.kind && r.addr == a.addr && r.size == a.size)
            {
                self.replay_pos += 1;
                return Some(r.value);
            }
            return None;
        }
        if insn != self.log_insn {
            self.log.clear();
            self.log_insn = insn;
        }
        self.log.push(a);
        None
    }

    /// Calls the core's `GuestIo`; a panic in it is kept and re-raised after the run.
    /// After an error the run only finishes its block (no exit check follows each memory
    /// access), and the devices see nothing more.
    pub fn with_io<R>(&mut self, f: impl FnOnce(&mut dyn GuestIo) -> R) -> Option<R> {
        if matches!(self.stop, Some(Stop::Error(_))) {
            return None;
        }
        let Some(mut io) = self.io else {
            self.request_stop(Stop::Error("device access outside of run".into()));
            return None;
        };
        // SAFETY: see the contract on `io`: the pointer is live for the whole run.
        let io = unsafe { io.as_mut() };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(io))) {
            Ok(r) => Some(r),
            Err(p) => {
                self.panic = Some(p);
                self.request_stop(Stop::Error("the device model panicked".into()));
                None
            }
        }
    }
}
