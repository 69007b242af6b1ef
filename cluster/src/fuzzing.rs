//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`) into the decoders of input that another party
//! controls: the locator's pub/sub events (anyone who can publish on the Redis channel), the downward API
//! annotations file (anyone who can annotate the pod), the pod contract's durations (the environment) and a
//! node's load report (the operator reads it from every node). Each takes arbitrary bytes, must never panic,
//! and checks what must hold of whatever it accepts. Compiled only with the `fuzzing` feature; not an API.

use crate::locator::LocatorEvent;
use crate::locator_events::{GATE_BOUND, GATE_UNBOUND, NODE_BOUND, NODE_UNBOUND};
use crate::locator_events::{decode_event, encode_gate_event, encode_node_event};

/// A locator event payload: what decodes is encoded again and decodes to the same event.
pub fn locator_event(payload: &[u8]) {
    let Ok((event, published_us)) = decode_event(payload) else {
        return;
    };
    let encoded = match &event {
        LocatorEvent::GateBound { uid, gate_id } => {
            encode_gate_event(GATE_BOUND, *uid, published_us, gate_id)
        }
        LocatorEvent::GateUnbound { uid, gate_id } => {
            encode_gate_event(GATE_UNBOUND, *uid, published_us, gate_id)
        }
        LocatorEvent::NodeBound { uid, pool, node_id } => {
            encode_node_event(NODE_BOUND, *uid, published_us, pool, node_id)
        }
        LocatorEvent::NodeUnbound { uid, pool, node_id } => {
            encode_node_event(NODE_UNBOUND, *uid, published_us, pool, node_id)
        }
        // Other events are never decoded from the channel.
        #[allow(unreachable_patterns)]
        _ => return,
    };
    assert_eq!(
        decode_event(encoded.as_bytes()),
        Ok((event, published_us)),
        "an event does not survive encoding: {encoded:?}"
    );
}

/// A downward API annotations file: parsed or refused with a line number inside the file.
pub fn annotations_file(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match crate::annotations_file::parse_annotations_file(text) {
        Ok(annotations) => assert!(annotations.len() <= text.split('\n').count()),
        Err(error) => assert!(
            (1..=text.split('\n').count()).contains(&error.line),
            "line {} of a {}-line file",
            error.line,
            text.split('\n').count()
        ),
    }
}

/// A pod-contract duration: accepted exactly when it matches the documented grammar.
pub fn duration(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let parsed = crate::contract::parse_duration(text);
    if parsed.is_ok() {
        assert!(grammar_matches(text), "{text:?} parsed but is not of the grammar");
    }
    assert_eq!(crate::contract::is_duration(text), parsed.is_ok());
}

/// [`crate::contract::DURATION_REGEX`] by hand (no regex engine in this crate).
fn grammar_matches(text: &str) -> bool {
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let number_ok = match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    };
    number_ok && matches!(unit, "" | "ms" | "s" | "m" | "h")
}

/// A node's load report: what parses is formatted again and parses to the same load.
pub fn load_report(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(load) = crate::load::parse_load(text) {
        let again = crate::load::format_load(&load);
        assert_eq!(crate::load::parse_load(&again), Ok(load), "{again:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_points_take_good_and_bad_input() {
        for input in [
            &b"G+ 42 1700000000000000 gate-a"[..],
            b"N- 7 1 6 battle node-b",
            b"N+ 7 1 99 battle node-b",
            b"\xff\xfe",
            b"",
        ] {
            locator_event(input);
        }
        annotations_file(b"a=\"x\\\"y\"\nswitchyard.dev/drain=\"true\"");
        annotations_file(b"a=\"unterminated\n\n");
        for text in [
            "10s",
            "1.5m",
            "0",
            "500ms",
            "1e3",
            "-1s",
            "1.s",
            "10d",
            "99999999999999999999h",
        ] {
            duration(text.as_bytes());
        }
        load_report(b"bound_players 3\nroutes 1,2\n");
        load_report(b"bound_players 3\nroutes 2,1,1\n");
    }
}
