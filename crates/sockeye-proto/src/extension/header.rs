//! The `Sec-WebSocket-Extensions` header grammar (RFC 6455 section 9.1): parsing offers and
//! answers into [`ExtensionParams`], and formatting them back.
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" ( token | quoted-string ) ]
//! ```
//!
//! Header values come from the peer, so parsing never panics and reports the offset of the first
//! byte it could not accept.

use std::fmt::{self, Write as _};

/// One extension with its parameters, as offered by a client or accepted by a server.
///
/// Parameter values are stored unquoted. Comparisons of names should ignore ASCII case; the
/// helpers here ([`param`](Self::param), [`is_named`](Self::is_named)) do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExtensionParams {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in the order given; `None` for a parameter without a value.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionParams {
    /// An extension without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Appends a parameter, with or without a value.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push((name.into(), value.map(str::to_owned)));
        self
    }

    /// Whether this extension is called `name`, ignoring ASCII case.
    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The first parameter called `name` (ASCII case ignored): `Some(None)` when it has no value,
    /// `None` when it is absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Whether this can be sent as is: the name, every parameter name and every value are tokens.
    ///
    /// Section 9.1 requires a quoted value to be a token once unquoted, so a value that is not a
    /// token cannot be sent at all, quoted or not.
    pub fn is_valid(&self) -> bool {
        is_token(&self.name)
            && self
                .params
                .iter()
                .all(|(n, v)| is_token(n) && v.as_deref().is_none_or(is_token))
    }
}

impl fmt::Display for ExtensionParams {
    /// Formats as in the header: `name; flag; key=value`. A value that is not a token is written
    /// as a quoted-string (such a value is not valid per section 9.1; see [`Self::is_valid`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            match value {
                None => {}
                Some(v) if is_token(v) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_char('\\')?;
                        }
                        f.write_char(c)?;
                    }
                    f.write_char('"')?;
                }
            }
        }
        Ok(())
    }
}

/// The `Sec-WebSocket-Extensions` (or `Sec-WebSocket-Protocol`) value was not valid.
///
/// Offsets count bytes from the start of the header value (one header line) that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionHeaderError {
    /// A token (extension or parameter name, or unquoted value) was expected.
    #[error("expected a token at offset {offset}")]
    ExpectedToken {
        /// Where the token should start.
        offset: usize,
    },
    /// A byte that the grammar does not allow here.
    #[error("unexpected byte {byte:#04x} at offset {offset}")]
    UnexpectedByte {
        /// Where the byte is.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A quoted-string without its closing quote.
    #[error("unterminated quoted string at offset {offset}")]
    UnterminatedQuotedString {
        /// Where the opening quote is.
        offset: usize,
    },
    /// A quoted value that is not a token once unquoted (section 9.1 requires one).
    #[error("quoted value at offset {offset} is not a token")]
    QuotedValueNotToken {
        /// Where the opening quote is.
        offset: usize,
    },
}

/// Parses `Sec-WebSocket-Extensions` header values, one per header line, in order.
///
/// Each value is a comma-separated list; as RFC 7230 section 7 allows, empty list elements and
/// whitespace around separators are tolerated, and a value with no elements contributes nothing.
pub fn parse_extensions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ExtensionParams>, ExtensionHeaderError> {
    let mut out = Vec::new();
    for value in values {
        let mut parser = Parser::new(value);
        parser.list(&mut out, Parser::extension)?;
    }
    Ok(out)
}

/// Formats a list of extensions for a header value, joined with `", "`.
pub fn format_extensions(list: &[ExtensionParams]) -> String {
    let mut out = String::new();
    for (i, ext) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{ext}");
    }
    out
}

/// Parses comma-separated token lists (the `Sec-WebSocket-Protocol` grammar, `1#token`), with
/// the same tolerance of whitespace and empty elements as [`parse_extensions`].
pub(crate) fn parse_token_list<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, ExtensionHeaderError> {
    let mut out = Vec::new();
    for value in values {
        let mut parser = Parser::new(value);
        parser.list(&mut out, Parser::token)?;
    }
    Ok(out)
}

/// Whether `s` is a non-empty RFC 7230 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// RFC 7230 section 3.2.6: `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over one header value.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    fn unexpected(&self) -> ExtensionHeaderError {
        match self.peek() {
            Some(byte) => ExtensionHeaderError::UnexpectedByte {
                offset: self.pos,
                byte,
            },
            None => ExtensionHeaderError::ExpectedToken { offset: self.pos },
        }
    }

    /// Optional whitespace (RFC 7230 `OWS`).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    /// `#element`: elements separated by commas, empty elements skipped.
    fn list<T>(
        &mut self,
        out: &mut Vec<T>,
        mut element: impl FnMut(&mut Self) -> Result<T, ExtensionHeaderError>,
    ) -> Result<(), ExtensionHeaderError> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.bump(),
                Some(_) => {
                    out.push(element(self)?);
                    self.skip_ows();
                    match self.peek() {
                        None => return Ok(()),
                        Some(b',') => self.bump(),
                        Some(_) => return Err(self.unexpected()),
                    }
                }
            }
        }
    }

    fn token(&mut self) -> Result<String, ExtensionHeaderError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.bump();
        }
        match self.text.get(start..self.pos) {
            Some(t) if !t.is_empty() => Ok(t.to_owned()),
            _ => Err(self.unexpected()),
        }
    }

    fn extension(&mut self) -> Result<ExtensionParams, ExtensionHeaderError> {
        let mut ext = ExtensionParams::new(self.token()?);
        loop {
            self.skip_ows();
            if self.peek() != Some(b';') {
                return Ok(ext);
            }
            self.bump();
            self.skip_ows();
            let name = self.token()?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.bump();
                self.skip_ows();
                if self.peek() == Some(b'"') {
                    Some(self.quoted_token()?)
                } else {
                    Some(self.token()?)
                }
            } else {
                None
            };
            ext.params.push((name, value));
        }
    }

    /// A quoted-string (RFC 7230 section 3.2.6) whose unquoted content must be a token
    /// (RFC 6455 section 9.1).
    fn quoted_token(&mut self) -> Result<String, ExtensionHeaderError> {
        let start = self.pos;
        self.bump();
        let mut content = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(ExtensionHeaderError::UnterminatedQuotedString { offset: start });
            };
            match b {
                b'"' => {
                    self.bump();
                    break;
                }
                b'\\' => {
                    self.bump();
                    match self.peek() {
                        None => {
                            return Err(ExtensionHeaderError::UnterminatedQuotedString {
                                offset: start,
                            });
                        }
                        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                        Some(c) if c == b'\t' || c >= b' ' && c != 0x7f => content.push(c),
                        Some(_) => return Err(self.unexpected()),
                    }
                }
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | b' '..=0x7e | 0x80..=0xff => content.push(b),
                _ => return Err(self.unexpected()),
            }
            self.bump();
        }
        match String::from_utf8(content) {
            Ok(value) if is_token(&value) => Ok(value),
            _ => Err(ExtensionHeaderError::QuotedValueNotToken { offset: start }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionParams {
        params
            .iter()
            .fold(ExtensionParams::new(name), |e, (n, v)| e.with_param(*n, *v))
    }

    #[test]
    fn rfc6455_9_1_valid_values() {
        let deflate = "permessage-deflate";
        let cases: &[(&[&str], Vec<ExtensionParams>)] = &[
            (&[], vec![]),
            (&[""], vec![]),
            (&[" , ,, "], vec![]),
            (&["foo"], vec![ext("foo", &[])]),
            (&["foo, bar"], vec![ext("foo", &[]), ext("bar", &[])]),
            (&["foo", "bar"], vec![ext("foo", &[]), ext("bar", &[])]),
            (
                &["permessage-deflate; client_max_window_bits"],
                vec![ext(deflate, &[("client_max_window_bits", None)])],
            ),
            (
                &["permessage-deflate;server_max_window_bits=10;client_no_context_takeover"],
                vec![ext(
                    deflate,
                    &[
                        ("server_max_window_bits", Some("10")),
                        ("client_no_context_takeover", None),
                    ],
                )],
            ),
            (
                &["permessage-deflate; client_max_window_bits=\"15\""],
                vec![ext(deflate, &[("client_max_window_bits", Some("15"))])],
            ),
            (
                &["a ; b = \"c\\d\" ,\t, e;f=g"],
                vec![
                    ext("a", &[("b", Some("cd"))]),
                    ext("e", &[("f", Some("g"))]),
                ],
            ),
            (
                &["x-webkit-deflate-frame", ", mux; max-channels=4, foo"],
                vec![
                    ext("x-webkit-deflate-frame", &[]),
                    ext("mux", &[("max-channels", Some("4"))]),
                    ext("foo", &[]),
                ],
            ),
        ];
        for (values, want) in cases {
            assert_eq!(
                parse_extensions(values.iter().copied()).as_ref(),
                Ok(want),
                "{values:?}"
            );
        }
    }

    #[test]
    fn rfc6455_9_1_invalid_values() {
        use ExtensionHeaderError::*;
        let cases: &[(&str, ExtensionHeaderError)] = &[
            (
                ";",
                UnexpectedByte {
                    offset: 0,
                    byte: b';',
                },
            ),
            ("foo;", ExpectedToken { offset: 4 }),
            (
                "foo; =1",
                UnexpectedByte {
                    offset: 5,
                    byte: b'=',
                },
            ),
            ("foo; a=", ExpectedToken { offset: 7 }),
            (
                "foo bar",
                UnexpectedByte {
                    offset: 4,
                    byte: b'b',
                },
            ),
            (
                "foo; a=b c",
                UnexpectedByte {
                    offset: 9,
                    byte: b'c',
                },
            ),
            ("foo; a=\"b", UnterminatedQuotedString { offset: 7 }),
            ("foo; a=\"b\\", UnterminatedQuotedString { offset: 7 }),
            ("foo; a=\"b c\"", QuotedValueNotToken { offset: 7 }),
            ("foo; a=\"\"", QuotedValueNotToken { offset: 7 }),
            ("foo; a=\"\\\"\"", QuotedValueNotToken { offset: 7 }),
            ("foo; a=\"b\x01\"", UnexpectedByte { offset: 9, byte: 1 }),
            (
                "f\u{e9}",
                UnexpectedByte {
                    offset: 1,
                    byte: 0xc3,
                },
            ),
            (
                "foo/1",
                UnexpectedByte {
                    offset: 3,
                    byte: b'/',
                },
            ),
            (
                "foo; a=b=c",
                UnexpectedByte {
                    offset: 8,
                    byte: b'=',
                },
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_extensions([*value]), Err(*want), "{value:?}");
        }
    }

    #[test]
    fn display_and_format_round_trip() {
        let list = vec![
            ext("permessage-deflate", &[("client_max_window_bits", None)]),
            ext(
                "permessage-deflate",
                &[("server_max_window_bits", Some("15"))],
            ),
        ];
        let text = format_extensions(&list);
        assert_eq!(
            text,
            "permessage-deflate; client_max_window_bits, \
             permessage-deflate; server_max_window_bits=15"
        );
        assert_eq!(parse_extensions([text.as_str()]), Ok(list));
        assert_eq!(format_extensions(&[]), "");
    }

    #[test]
    fn display_quotes_non_token_values() {
        let e = ext("x", &[("a", Some("b \"c\\"))]);
        assert_eq!(e.to_string(), r#"x; a="b \"c\\""#);
        assert!(!e.is_valid());
        assert!(ext("x", &[("a", Some("1")), ("b", None)]).is_valid());
        assert!(!ext("x y", &[]).is_valid());
        assert!(!ext("x", &[("", None)]).is_valid());
    }

    #[test]
    fn lookups_ignore_case() {
        let e = ext(
            "PerMessage-Deflate",
            &[("Server_No_Context_Takeover", None)],
        );
        assert!(e.is_named("permessage-deflate"));
        assert_eq!(e.param("server_no_context_takeover"), Some(None));
        assert_eq!(e.param("client_max_window_bits"), None);
    }

    #[test]
    fn token_lists() {
        assert_eq!(
            parse_token_list(["chat, superchat", " ,v2.json "]),
            Ok(vec!["chat".into(), "superchat".into(), "v2.json".into()])
        );
        assert_eq!(
            parse_token_list(["a b"]),
            Err(ExtensionHeaderError::UnexpectedByte {
                offset: 2,
                byte: b'b'
            })
        );
        assert_eq!(
            parse_token_list(["a;b"]),
            Err(ExtensionHeaderError::UnexpectedByte {
                offset: 1,
                byte: b';'
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_valid_output_round_trips(s in "[ -~\t]{0,40}") {
            if let Ok(list) = parse_extensions([s.as_str()]) {
                // Everything parsed is sendable and reparses to the same list.
                proptest::prop_assert!(list.iter().all(ExtensionParams::is_valid));
                let text = format_extensions(&list);
                proptest::prop_assert_eq!(parse_extensions([text.as_str()]), Ok(list));
            }
        }
    }
}
