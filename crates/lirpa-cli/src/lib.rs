//! The `lirpa` command's parsing of its input files (JSON vectors, specification
//! matrices, perturbation files), as a library: the binary and the fuzzer
//! (`lirpa-fuzz`) call the same code.

pub mod inputs;
pub mod perturbation;
