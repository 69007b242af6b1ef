//! Fuzzes the Redis locator's pub/sub event decoder: anyone who can publish on the channel controls
//! the payload. Checks: no panic; an event that decodes is encoded again and decodes to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_cluster::fuzzing::locator_event(data);
});
