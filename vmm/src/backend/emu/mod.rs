//! The deterministic software CPU on the Unicorn engine (GPL-2.0, behind the `emu` feature).
