//! Fuzzes the downward API annotations-file parser (a node's drain signal): whoever can annotate the
//! pod controls the file. Checks: no panic; an error names a line of the file.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_cluster::fuzzing::annotations_file(data);
});
