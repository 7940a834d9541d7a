//! What the benchmark driver shares with the chaos suite (tests/chaos): starting, watching and
//! stopping the processes of a stack, and the seed's secret and token.

pub mod procs;
pub mod seed;
