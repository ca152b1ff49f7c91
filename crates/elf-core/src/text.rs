//! Making user text safe to show and to store.

use std::borrow::Cow;

/// Text safe to echo on a terminal: control characters (ANSI escapes included) are shown as
/// `\x1b`, `\n`, `\t`, and so on, never sent raw.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ESC \`, and
/// two-byte `ESC x`) and every other control character. Newlines are kept when `keep_newlines`
/// (as `\n`; a `\r\n` becomes `\n`), tabs become spaces.
pub fn clean(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' | '\u{9b}' => {
                let csi = c == '\u{9b}' || it.peek() == Some(&'[');
                if c == '\u{1b}' {
                    match it.peek() {
                        Some('[') => {
                            it.next();
                        }
                        Some(']') => {
                            it.next();
                            // OSC: up to BEL or ST (ESC \).
                            while let Some(d) = it.next() {
                                if d == '\u{7}' {
                                    break;
                                }
                                if d == '\u{1b}' {
                                    if it.peek() == Some(&'\\') {
                                        it.next();
                                    }
                                    break;
                                }
                            }
                            continue;
                        }
                        Some(_) => {
                            it.next();
                            continue;
                        }
                        None => continue,
                    }
                }
                if csi {
                    // Parameters and intermediates, then one final byte in @..~.
                    for d in it.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
            }
            '\n' if keep_newlines => out.push('\n'),
            '\r' if keep_newlines => {
                if it.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_shows_controls() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\u{1b}[31mb\n"), "a\\x1b[31mb\\n");
        assert_eq!(escape("\u{85}"), "\\x85");
    }

    #[test]
    fn clean_strips_ansi_and_controls() {
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m text", false), "red text");
        assert_eq!(clean("bell\u{7}!", false), "bell!");
        assert_eq!(clean("title\u{1b}]0;pwned\u{7}x", false), "titlex");
        assert_eq!(clean("a\r\nb\rc", true), "a\nb\nc");
        assert_eq!(clean("a\nb", false), "ab");
        assert_eq!(clean("tab\there", false), "tab here");
        assert_eq!(clean("trailing\u{1b}", false), "trailing");
        assert_eq!(clean("é ünïcødé 日本", false), "é ünïcødé 日本");
    }
}
