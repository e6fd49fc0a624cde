//! VNN-LIB parser (in progress).
