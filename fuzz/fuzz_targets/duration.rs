//! Fuzzes the pod contract's duration parser (flags, environment, the CRD's values). Checks: no panic;
//! what it accepts matches the documented grammar.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_cluster::fuzzing::duration(data);
});
