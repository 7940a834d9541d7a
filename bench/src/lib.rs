//! What the benchmark driver shares with the chaos suite (tests/chaos): starting, watching and
//! stopping the processes of a stack.

pub mod procs;
