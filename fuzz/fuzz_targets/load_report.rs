//! Fuzzes the node load-report parser (the operator reads `GET /load` from every node pod). Checks: no
//! panic; a report that parses is formatted again and parses to the same load.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_cluster::fuzzing::load_report(data);
});
