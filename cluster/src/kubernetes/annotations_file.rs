//! The parser of a downward API `metadata.annotations` file.
//!
//! The kubelet writes one line per annotation, sorted by key, lines joined with `\n` and no newline after
//! the last: `key="value"`, where the value is quoted like Go's `strconv.Quote` (`fmt`'s `%q`): `\"`, `\\`,
//! `\a \b \f \n \r \t \v`, `\xNN` for bytes that are not valid UTF-8 and for control characters, `\uNNNN` and
//! `\UNNNNNNNN` for other non-printable characters. Keys never contain `=`, so the first `=` splits a line.
//! This parser also takes what Go's `strconv.Unquote` takes (octal `\NNN`, `\'`), tolerates `\r\n` and blank
//! lines, and rejects anything else with the line number.

use std::collections::BTreeMap;

/// A line of an annotations file that is not `key="quoted value"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("downward API annotations file, line {line}: {problem}")]
pub struct AnnotationsFileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Parses the whole file into `key → value`.
///
/// # Errors
/// [`AnnotationsFileError`] for the first malformed line.
pub fn parse_annotations_file(text: &str) -> Result<BTreeMap<String, String>, AnnotationsFileError> {
    let mut annotations = BTreeMap::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let fail = |problem| AnnotationsFileError {
            line: index + 1,
            problem,
        };
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| fail("no `=` between key and value"))?;
        if key.is_empty() || key.bytes().any(|b| b.is_ascii_whitespace() || b == b'"') {
            return Err(fail("the key is empty or contains spaces or quotes"));
        }
        let value = unquote(quoted).map_err(fail)?;
        annotations.insert(key.to_owned(), value);
    }
    Ok(annotations)
}

/// Decodes one Go double-quoted string literal that spans the whole of `quoted`.
fn unquote(quoted: &str) -> Result<String, &'static str> {
    let inner = quoted
        .strip_prefix('"')
        .ok_or("the value does not start with `\"`")?;
    let mut bytes = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    loop {
        let c = chars.next().ok_or("the value has no closing `\"`")?;
        match c {
            '"' => {
                if chars.as_str().is_empty() {
                    break;
                }
                return Err("text after the closing `\"`");
            }
            '\\' => unescape(&mut chars, &mut bytes)?,
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    // `\xNN` may spell bytes that are not UTF-8 (the annotation was not); keep what can be kept.
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Decodes the escape after a `\` into `out`.
fn unescape(chars: &mut std::str::Chars<'_>, out: &mut Vec<u8>) -> Result<(), &'static str> {
    const BAD: &str = "a malformed escape sequence in the value";
    let simple = |b: u8, out: &mut Vec<u8>| {
        out.push(b);
        Ok(())
    };
    match chars.next().ok_or(BAD)? {
        'a' => simple(0x07, out),
        'b' => simple(0x08, out),
        'f' => simple(0x0c, out),
        'n' => simple(b'\n', out),
        'r' => simple(b'\r', out),
        't' => simple(b'\t', out),
        'v' => simple(0x0b, out),
        '\\' => simple(b'\\', out),
        '"' => simple(b'"', out),
        '\'' => simple(b'\'', out),
        'x' => {
            let byte = u8::try_from(hex(chars, 2).ok_or(BAD)?).map_err(|_| BAD)?;
            simple(byte, out)
        }
        'u' => push_char(hex(chars, 4).ok_or(BAD)?, out),
        'U' => push_char(hex(chars, 8).ok_or(BAD)?, out),
        first @ '0'..='7' => {
            let mut value = first.to_digit(8).ok_or(BAD)?;
            for _ in 0..2 {
                value = value * 8 + chars.next().and_then(|c| c.to_digit(8)).ok_or(BAD)?;
            }
            simple(u8::try_from(value).map_err(|_| BAD)?, out)
        }
        _ => Err(BAD),
    }
}

fn hex(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<u32> {
    let mut value: u32 = 0;
    for _ in 0..digits {
        value = value.checked_mul(16)? + chars.next()?.to_digit(16)?;
    }
    Some(value)
}

fn push_char(code: u32, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let c = char::from_u32(code).ok_or("an escape names no Unicode character")?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BTreeMap<String, String> {
        match parse_annotations_file(text) {
            Ok(map) => map,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn a_kubelet_file() {
        // as the kubelet writes it: sorted keys, no newline after the last line
        let text = "controller.kubernetes.io/pod-deletion-cost=\"3\"\n\
                    kubernetes.io/config.seen=\"2026-01-02T03:04:05.678901234Z\"\n\
                    switchyard.dev/bound-players=\"3\"\n\
                    switchyard.dev/drain=\"true\"";
        let map = parse(text);
        assert_eq!(map.len(), 4);
        assert_eq!(map["switchyard.dev/drain"], "true");
        assert_eq!(map["switchyard.dev/bound-players"], "3");
        assert_eq!(map["kubernetes.io/config.seen"], "2026-01-02T03:04:05.678901234Z");
    }

    #[test]
    fn empty_files_and_blank_lines() {
        assert!(parse("").is_empty());
        assert!(parse("\n\n").is_empty());
        assert_eq!(parse("a=\"1\"\r\n\nb=\"2\"\n").len(), 2);
        assert_eq!(parse("empty=\"\"")["empty"], "");
    }

    #[test]
    fn go_quote_escapes() {
        // what Go's %q produces for: quotes, backslash, newline, tab, a control char, non-printables
        let map = parse(r#"k="say \"hi\"\\ \n\t\a\b\f\r\v end""#);
        assert_eq!(map["k"], "say \"hi\"\\ \n\t\u{7}\u{8}\u{c}\r\u{b} end");
        assert_eq!(parse(r#"k="\x00\x7f""#)["k"], "\u{0}\u{7f}");
        assert_eq!(parse(r#"k="\u200b\U0001f600""#)["k"], "\u{200b}\u{1f600}");
        // printable non-ASCII is written as is
        assert_eq!(parse("k=\"héllo 世界 🎮\"")["k"], "héllo 世界 🎮");
        // Unquote also takes octal and \'
        assert_eq!(parse(r#"k="\101\'""#)["k"], "A'");
        // `=` inside the value is data
        assert_eq!(parse(r#"k="a=b""#)["k"], "a=b");
        // a JSON annotation value (kubectl's last-applied-configuration)
        let json = r#"{"metadata":{"annotations":{"x":"y"}}}"#;
        let line = format!("kubectl.kubernetes.io/last-applied-configuration={:?}", json);
        assert_eq!(
            parse(&line)["kubectl.kubernetes.io/last-applied-configuration"],
            json
        );
    }

    #[test]
    fn invalid_utf8_bytes_are_replaced() {
        assert_eq!(parse(r#"k="a\xffb""#)["k"], "a\u{fffd}b");
        // bytes that do form UTF-8 together decode
        assert_eq!(parse(r#"k="\xc3\xa9""#)["k"], "é");
    }

    #[test]
    fn malformed_lines_are_rejected_with_their_number() {
        let cases: &[(&str, usize)] = &[
            ("novalue", 1),
            ("a=\"1\"\nb=2", 2),        // unquoted
            ("a=\"1", 1),               // unterminated
            ("a=\"1\" trailing", 1),    // text after the closing quote
            ("a=\"1\"\"", 1),           // stray quote
            ("=\"1\"", 1),              // empty key
            ("a b=\"1\"", 1),           // space in key
            (r#"a="\q""#, 1),           // unknown escape
            (r#"a="\x1""#, 1),          // short hex
            (r#"a="\xzz""#, 1),         // not hex
            (r#"a="\ud800""#, 1),       // a surrogate is no character
            (r#"a="\U00110000""#, 1),   // beyond Unicode
            (r#"a="\400""#, 1),         // octal over 255
            (r#"a="\12""#, 1),          // short octal
            ("a=\"1\"\n\nb=\"\\\"", 3), // escaped closing quote: unterminated, on line 3
        ];
        for (text, line) in cases {
            match parse_annotations_file(text) {
                Ok(map) => panic!("{text:?} parsed as {map:?}"),
                Err(e) => assert_eq!(e.line, *line, "{text:?}: {e}"),
            }
        }
        let e = parse_annotations_file("a=1").err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("downward API annotations file, line 1: the value does not start with `\"`")
        );
    }

    #[test]
    fn round_trips_values_quoted_like_go() {
        // A small model of Go's strconv.Quote for the characters the kubelet can meet.
        fn go_quote(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    '\u{200b}' => out.push_str("\\u200b"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        let values = [
            "",
            "true",
            "multi\nline\nvalue",
            "tab\there \"quoted\" back\\slash",
            "ctl \u{1}\u{1f}\u{7f}",
            "zero\u{200b}width",
            "ünïcödé",
        ];
        let text: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("key-{i}={}", go_quote(v)))
            .collect();
        let map = parse(&text.join("\n"));
        for (i, v) in values.iter().enumerate() {
            assert_eq!(map[&format!("key-{i}")], *v);
        }
    }
}
