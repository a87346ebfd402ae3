//! `$filter` text to [`Filter`]: a hand-written lexer and a recursive-descent parser.
//!
//! Grammar, loosest binding first (keywords case-insensitive):
//!
//! ```text
//! or_expr  := and_expr ( "or" and_expr )*
//! and_expr := unary ( "and" unary )*
//! unary    := "not" negated | primary
//! negated  := "not" negated | "(" or_expr ")" | operand
//! primary  := "(" or_expr ")" | operand [ cmp_op operand ]
//! operand  := identifier | literal
//! cmp_op   := "eq" | "ne" | "gt" | "ge" | "lt" | "le"
//! ```
//!
//! OData gives `not` higher precedence than the comparison operators, so `not A eq B` means
//! `(not A) eq B`: a comparison of a negation, which the AST (and Azure's tables) cannot express. Rather
//! than silently reading it as `not (A eq B)`, the parser rejects it and says how to write it. Likewise
//! a parenthesized expression cannot be compared (`(A eq 1) eq true`).
//!
//! Robustness invariants: the lexer reads one token ahead and never backtracks, so work is linear in the
//! input; recursion is only entered through `(` and `not`, counted against [`MAX_FILTER_DEPTH`]; leaves
//! are counted as they are built, so a filter with too many comparisons is rejected before a large tree
//! exists. Byte positions always sit on character boundaries (the lexer advances by whole characters or
//! ASCII bytes), which is what makes the slicing below panic-free.

use uuid::Uuid;

use super::{CompareOp, Filter, MAX_FILTER_DEPTH, Operand};
use crate::entity::limits::MAX_FILTER_COMPARISONS;
use crate::error::{Error, Result};
use crate::value::{DateTime, Value};

pub(super) fn parse(text: &str) -> Result<Filter> {
    if text.trim().is_empty() {
        return Err(syntax_error(text, 0, "the filter is empty"));
    }
    let mut parser = Parser::new(text)?;
    let filter = parser.or_expr()?;
    match parser.token.kind {
        Tok::End => Ok(filter),
        Tok::Cmp(_) => Err(parser.unexpected(
            "`and`, `or` or the end of the filter (a comparison's result cannot be compared again)",
        )),
        _ => Err(parser.unexpected("`and`, `or` or the end of the filter")),
    }
}

/// An InvalidInput error pointing at a 1-based character position, which is what a person counting
/// along the decoded filter sees (byte offsets would be off after the first non-ASCII character).
fn syntax_error(text: &str, byte_pos: usize, message: &str) -> Error {
    let character = text
        .get(..byte_pos)
        .map_or(byte_pos, |before| before.chars().count())
        + 1;
    Error::invalid_input(format!(
        "Invalid $filter at character {character}: {message}."
    ))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Cmp(CompareOp),
    Ident(&'a str),
    Lit(Value),
    End,
}

#[derive(Debug)]
struct Token<'a> {
    kind: Tok<'a>,
    /// Byte offset of the token's first character.
    start: usize,
}

fn describe(tok: &Tok<'_>) -> String {
    match tok {
        Tok::LParen => "`(`".to_string(),
        Tok::RParen => "`)`".to_string(),
        Tok::And => "`and`".to_string(),
        Tok::Or => "`or`".to_string(),
        Tok::Not => "`not`".to_string(),
        Tok::Cmp(op) => format!("`{op}`"),
        Tok::Ident(name) => format!("`{name}`"),
        Tok::Lit(value) => format!("the literal `{}`", Operand::Literal(value.clone())),
        Tok::End => "the end of the filter".to_string(),
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn error(&self, byte_pos: usize, message: &str) -> Error {
        syntax_error(self.text, byte_pos, message)
    }

    fn peek_char(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn byte_at(&self, pos: usize) -> Option<u8> {
        self.text.as_bytes().get(pos).copied()
    }

    fn next_token(&mut self) -> Result<Token<'a>> {
        while let Some(c) = self.peek_char().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                kind: Tok::End,
                start,
            });
        };
        let kind = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            '\'' => Tok::Lit(Value::String(self.quoted()?)),
            '0'..='9' => Tok::Lit(self.number()?),
            '-' if self.byte_at(start + 1).is_some_and(|b| b.is_ascii_digit()) => {
                Tok::Lit(self.number()?)
            }
            '-' if self.text[start + 1..].starts_with("INF") => {
                self.pos += 1;
                match self.word()? {
                    Tok::Lit(Value::Double(d)) if d.is_infinite() => Tok::Lit(Value::Double(-d)),
                    _ => return Err(self.error(start, "`-` must be followed by a number or `INF`")),
                }
            }
            '-' => return Err(self.error(start, "`-` must be followed by a number or `INF`")),
            c if is_ident_start(c) => self.word()?,
            c => return Err(self.error(start, &format!("unexpected character `{c}`"))),
        };
        Ok(Token { kind, start })
    }

    /// A string literal's content, with `''` unescaped; `self.pos` is at the opening quote.
    fn quoted(&mut self) -> Result<String> {
        let open = self.pos;
        let mut content = String::new();
        let mut pos = open + 1;
        loop {
            let Some(len) = self.text[pos..].find('\'') else {
                return Err(self.error(open, "unterminated string literal"));
            };
            content.push_str(&self.text[pos..pos + len]);
            pos += len + 1;
            if self.byte_at(pos) == Some(b'\'') {
                content.push('\'');
                pos += 1;
            } else {
                self.pos = pos;
                return Ok(content);
            }
        }
    }

    /// A numeric literal; `self.pos` is at its first digit or at a `-` followed by a digit.
    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        let mut pos = start;
        if self.byte_at(pos) == Some(b'-') {
            pos += 1;
        }
        pos = self.skip_digits(pos);
        let mut fractional = false;
        if self.byte_at(pos) == Some(b'.') {
            fractional = true;
            pos = self.require_digits(pos + 1, "expected a digit after `.`")?;
        }
        if matches!(self.byte_at(pos), Some(b'e' | b'E')) {
            fractional = true;
            pos += 1;
            if matches!(self.byte_at(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            pos = self.require_digits(pos, "expected a digit in the exponent")?;
        }
        let body = &self.text[start..pos];
        let suffix = self
            .byte_at(pos)
            .filter(|b| matches!(b, b'L' | b'l' | b'D' | b'd'));
        if suffix.is_some() {
            pos += 1;
        }
        if self.text[pos..]
            .chars()
            .next()
            .is_some_and(is_ident_continue)
        {
            return Err(self.error(start, "invalid numeric literal"));
        }
        self.pos = pos;
        let value = match suffix {
            Some(b'L' | b'l') if fractional => {
                return Err(self.error(start, "an Int64 literal (suffix L) must be a whole number"));
            }
            Some(b'L' | b'l') => body.parse().map(Value::Int64).ok(),
            Some(_) => body
                .parse()
                .ok()
                .filter(|d: &f64| d.is_finite())
                .map(Value::Double),
            None if fractional => body
                .parse()
                .ok()
                .filter(|d: &f64| d.is_finite())
                .map(Value::Double),
            // Whole numbers without a suffix are Int32 as in OData; when they do not fit, Int64 rather
            // than an error, since the writer clearly meant an integer.
            None => body
                .parse()
                .map(Value::Int32)
                .or_else(|_| body.parse().map(Value::Int64))
                .ok(),
        };
        value.ok_or_else(|| {
            let kind = if fractional || matches!(suffix, Some(b'D' | b'd')) {
                "Double"
            } else {
                "Int64"
            };
            self.error(
                start,
                &format!("the number `{body}` is out of range for {kind}"),
            )
        })
    }

    fn skip_digits(&self, mut pos: usize) -> usize {
        while self.byte_at(pos).is_some_and(|b| b.is_ascii_digit()) {
            pos += 1;
        }
        pos
    }

    fn require_digits(&self, pos: usize, message: &str) -> Result<usize> {
        let end = self.skip_digits(pos);
        if end == pos {
            Err(self.error(pos, message))
        } else {
            Ok(end)
        }
    }

    /// An identifier, keyword, `NaN`/`INF`, or a prefixed literal (`datetime'...'`); `self.pos` is at a
    /// character that may start an identifier.
    fn word(&mut self) -> Result<Tok<'a>> {
        let start = self.pos;
        let len = self.text[start..]
            .find(|c: char| !is_ident_continue(c))
            .unwrap_or(self.text.len() - start);
        let word = &self.text[start..start + len];
        self.pos = start + len;
        if self.byte_at(self.pos) == Some(b'\'') {
            return self.prefixed_literal(start, word).map(Tok::Lit);
        }
        Ok(match word.to_ascii_lowercase().as_str() {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            "eq" => Tok::Cmp(CompareOp::Eq),
            "ne" => Tok::Cmp(CompareOp::Ne),
            "gt" => Tok::Cmp(CompareOp::Gt),
            "ge" => Tok::Cmp(CompareOp::Ge),
            "lt" => Tok::Cmp(CompareOp::Lt),
            "le" => Tok::Cmp(CompareOp::Le),
            "true" => Tok::Lit(Value::Boolean(true)),
            "false" => Tok::Lit(Value::Boolean(false)),
            // OData's spellings of the special doubles, case-sensitive as in the OData ABNF.
            _ if word == "NaN" => Tok::Lit(Value::Double(f64::NAN)),
            _ if word == "INF" => Tok::Lit(Value::Double(f64::INFINITY)),
            _ => Tok::Ident(word),
        })
    }

    fn prefixed_literal(&mut self, start: usize, prefix: &str) -> Result<Value> {
        let content = self.quoted()?;
        let is = |p: &str| prefix.eq_ignore_ascii_case(p);
        if is("datetime") {
            DateTime::parse(&content)
                .map(Value::DateTime)
                .ok_or_else(|| {
                    self.error(
                        start,
                        "invalid datetime literal: expected an ISO 8601 UTC instant between \
                     1601-01-01T00:00:00Z and 9999-12-31T23:59:59.9999999Z, like \
                     datetime'2008-07-10T00:00:00Z'",
                    )
                })
        } else if is("guid") {
            Uuid::parse_str(&content).map(Value::Guid).map_err(|_| {
                self.error(
                    start,
                    "invalid guid literal: expected guid'c9da6455-213d-42c9-9a79-3e9149a57833'",
                )
            })
        } else if is("x") || is("binary") {
            decode_hex(&content).map(Value::Binary).ok_or_else(|| {
                self.error(
                    start,
                    "invalid binary literal: expected an even number of hex digits, like X'0A0B'",
                )
            })
        } else {
            Err(self.error(
                start,
                &format!("unknown literal type `{prefix}`: expected datetime, guid, X or binary"),
            ))
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            let (high, low) = (digit(pair[0])?, digit(pair[1])?);
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The lookahead: the next token not yet consumed.
    token: Token<'a>,
    /// Open parentheses plus pending `not`s.
    depth: usize,
    /// Leaves built so far.
    comparisons: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self> {
        let mut lexer = Lexer { text, pos: 0 };
        let token = lexer.next_token()?;
        Ok(Parser {
            lexer,
            token,
            depth: 0,
            comparisons: 0,
        })
    }

    /// Consumes the lookahead and returns it.
    fn advance(&mut self) -> Result<Token<'a>> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.token, next))
    }

    fn error(&self, byte_pos: usize, message: &str) -> Error {
        syntax_error(self.lexer.text, byte_pos, message)
    }

    fn unexpected(&self, expected: &str) -> Error {
        let message = format!("expected {expected}, found {}", describe(&self.token.kind));
        self.error(self.token.start, &message)
    }

    fn enter(&mut self, at: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(self.error(
                at,
                &format!(
                    "the filter nests parentheses and `not` deeper than {MAX_FILTER_DEPTH} levels"
                ),
            ));
        }
        Ok(())
    }

    fn leaf(&mut self, at: usize, leaf: Filter) -> Result<Filter> {
        self.comparisons += 1;
        if self.comparisons > MAX_FILTER_COMPARISONS {
            return Err(self.error(
                at,
                &format!(
                    "the filter has more than {MAX_FILTER_COMPARISONS} comparisons, the most a \
                     table query may have"
                ),
            ));
        }
        Ok(leaf)
    }

    fn or_expr(&mut self) -> Result<Filter> {
        let mut left = self.and_expr()?;
        while self.token.kind == Tok::Or {
            self.advance()?;
            let right = self.and_expr()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Filter> {
        let mut left = self.unary()?;
        while self.token.kind == Tok::And {
            self.advance()?;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter> {
        if self.token.kind != Tok::Not {
            return self.primary();
        }
        let negated = self.negated()?;
        if let Tok::Cmp(op) = self.token.kind {
            return Err(self.error(
                self.token.start,
                &format!(
                    "`not` applies to the operand right after it, so this `{op}` would compare a \
                     negation; write `not (A {op} B)` to negate a comparison"
                ),
            ));
        }
        Ok(negated)
    }

    /// `not` and what it negates; the lookahead is the `not`.
    fn negated(&mut self) -> Result<Filter> {
        let start = self.token.start;
        self.enter(start)?;
        self.advance()?;
        let inner = match self.token.kind {
            Tok::Not => self.negated()?,
            Tok::LParen => self.group()?,
            _ => {
                let at = self.token.start;
                let operand = self.operand("a property, a literal, `not` or `(` after `not`")?;
                self.bare(at, operand)?
            }
        };
        self.depth -= 1;
        Ok(Filter::Not(Box::new(inner)))
    }

    fn primary(&mut self) -> Result<Filter> {
        if self.token.kind == Tok::LParen {
            return self.group();
        }
        let start = self.token.start;
        let left = self.operand("a property, a literal, `not` or `(`")?;
        match self.token.kind {
            Tok::Cmp(op) => {
                self.advance()?;
                let right = self.operand(&format!("a property or a literal after `{op}`"))?;
                self.leaf(start, Filter::Compare { left, op, right })
            }
            Tok::LParen if matches!(left, Operand::Property(_)) => Err(self.error(
                start,
                &format!(
                    "`{left}(...)`: the Table service supports no functions (startswith, \
                     substringof, ...); compare with `ge` and `lt` instead"
                ),
            )),
            _ => self.bare(start, left),
        }
    }

    /// An operand standing alone where a boolean is expected (`IsActive`, `not Flag`, `true`). A
    /// literal of another type can never be one: Azure refuses `$filter=1` with "The $filter expression
    /// must evaluate to a single boolean value" (Azurite #1185 quotes the real service), rather than
    /// matching nothing.
    fn bare(&mut self, at: usize, operand: Operand) -> Result<Filter> {
        if let Operand::Literal(value) = &operand
            && !matches!(value, Value::Boolean(_))
        {
            return Err(self.error(
                at,
                &format!(
                    "the $filter expression must evaluate to a single boolean value, and                      `{operand}` is an {} literal",
                    value.edm_type().edm_name()
                ),
            ));
        }
        self.leaf(at, Filter::Operand(operand))
    }

    /// `( or_expr )`; the lookahead is the `(`.
    fn group(&mut self) -> Result<Filter> {
        self.enter(self.token.start)?;
        self.advance()?;
        let inner = self.or_expr()?;
        if self.token.kind != Tok::RParen {
            return Err(self.unexpected("`)`"));
        }
        self.advance()?;
        self.depth -= 1;
        Ok(inner)
    }

    fn operand(&mut self, expected: &str) -> Result<Operand> {
        match self.token.kind {
            Tok::Ident(_) | Tok::Lit(_) => {}
            _ => return Err(self.unexpected(expected)),
        }
        Ok(match self.advance()?.kind {
            Tok::Ident(name) => Operand::Property(name.to_string()),
            Tok::Lit(value) => Operand::Literal(value),
            // The match above admitted only identifiers and literals.
            _ => return Err(Error::internal("filter parser lost its lookahead")),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::ErrorCode;

    /// A compact, exact rendering of a tree for golden tests: literals print in their typed canonical form
    /// (`30` is Int32, `30L` Int64), so the string pins both the shape and every type.
    fn sexpr(filter: &Filter) -> String {
        match filter {
            Filter::And(l, r) => format!("(and {} {})", sexpr(l), sexpr(r)),
            Filter::Or(l, r) => format!("(or {} {})", sexpr(l), sexpr(r)),
            Filter::Not(inner) => format!("(not {})", sexpr(inner)),
            Filter::Compare { left, op, right } => format!("({op} {left} {right})"),
            Filter::Operand(operand) => operand.to_string(),
        }
    }

    const GOLDEN: &[(&str, &str)] = &[
        // The shapes from the service documentation and the SDKs.
        (
            "PartitionKey eq 'a' and (Age gt 30 or not IsActive)",
            "(and (eq PartitionKey 'a') (or (gt Age 30) (not IsActive)))",
        ),
        (
            "PartitionKey eq 'pk' and RowKey eq 'rk'",
            "(and (eq PartitionKey 'pk') (eq RowKey 'rk'))",
        ),
        (
            "(PartitionKey eq 'pk') and (RowKey ge 'a')",
            "(and (eq PartitionKey 'pk') (ge RowKey 'a'))",
        ),
        (
            "Timestamp lt datetime'2021-01-01T00:00:00.0000000Z'",
            "(lt Timestamp datetime'2021-01-01T00:00:00.0000000Z')",
        ),
        ("age eq 39L", "(eq age 39L)"),
        ("Amount le 1.5", "(le Amount 1.5)"),
        (
            "Big eq 9223372036854775807L",
            "(eq Big 9223372036854775807L)",
        ),
        (
            "Big eq -9223372036854775808L",
            "(eq Big -9223372036854775808L)",
        ),
        (
            "T ge datetime'2020-01-01T00:00:00Z'",
            "(ge T datetime'2020-01-01T00:00:00.0000000Z')",
        ),
        (
            "T ge DateTime'2020-01-01T00:00'",
            "(ge T datetime'2020-01-01T00:00:00.0000000Z')",
        ),
        (
            "G eq guid'c9da6455-213d-42c9-9a79-3e9149a57833'",
            "(eq G guid'c9da6455-213d-42c9-9a79-3e9149a57833')",
        ),
        (
            "G eq guid'C9DA6455-213D-42C9-9A79-3E9149A57833'",
            "(eq G guid'c9da6455-213d-42c9-9a79-3e9149a57833')",
        ),
        ("B eq X'0aFF'", "(eq B X'0AFF')"),
        ("B eq binary'0aff'", "(eq B X'0AFF')"),
        ("B eq x''", "(eq B X'')"),
        // Operands on either side, properties on both.
        ("'x' eq RowKey", "(eq 'x' RowKey)"),
        ("Age gt Height", "(gt Age Height)"),
        ("1 eq 1", "(eq 1 1)"),
        // Strings.
        ("Name eq 'it''s'", "(eq Name 'it''s')"),
        ("Name eq ''''", "(eq Name '''')"),
        ("Name eq ''", "(eq Name '')"),
        (
            "Name eq 'a and b or not c eq d'",
            "(eq Name 'a and b or not c eq d')",
        ),
        ("Name eq 'été'", "(eq Name 'été')"),
        ("Naïve eq 'x'", "(eq Naïve 'x')"),
        // Numbers: Int32 unless it does not fit, Int64 with L, Double with a fraction, exponent or d.
        ("Age eq -5", "(eq Age -5)"),
        ("Age eq 2147483647", "(eq Age 2147483647)"),
        ("Age eq -2147483648", "(eq Age -2147483648)"),
        ("Age eq 2147483648", "(eq Age 2147483648L)"),
        ("Age eq 3000000000", "(eq Age 3000000000L)"),
        ("Age eq 007", "(eq Age 7)"),
        ("Age eq 39l", "(eq Age 39L)"),
        ("X eq 1e3", "(eq X 1000.0)"),
        ("X eq 2.0", "(eq X 2.0)"),
        ("X eq -0.5", "(eq X -0.5)"),
        ("X eq 1.5d", "(eq X 1.5)"),
        ("X eq 2D", "(eq X 2.0)"),
        ("X eq 1E+16", "(eq X 1e16)"),
        ("X eq 2.5e-3", "(eq X 0.0025)"),
        ("X eq INF", "(eq X INF)"),
        ("X eq -INF", "(eq X -INF)"),
        ("X eq NaN", "(eq X NaN)"),
        // Booleans and bare operands.
        ("IsActive", "IsActive"),
        ("IsActive eq true", "(eq IsActive true)"),
        ("IsActive eq FALSE", "(eq IsActive false)"),
        ("true", "true"),
        ("not IsActive", "(not IsActive)"),
        ("not not IsActive", "(not (not IsActive))"),
        ("not (A eq 1)", "(not (eq A 1))"),
        ("not(A eq 1)", "(not (eq A 1))"),
        // Precedence: not > comparison > and > or; and/or group to the left.
        (
            "a eq 1 or b eq 2 and c eq 3",
            "(or (eq a 1) (and (eq b 2) (eq c 3)))",
        ),
        (
            "a eq 1 and b eq 2 or c eq 3",
            "(or (and (eq a 1) (eq b 2)) (eq c 3))",
        ),
        (
            "a eq 1 or b eq 2 or c eq 3",
            "(or (or (eq a 1) (eq b 2)) (eq c 3))",
        ),
        ("a and b and c", "(and (and a b) c)"),
        ("a and (b or c)", "(and a (or b c))"),
        ("not a and b", "(and (not a) b)"),
        ("not a or not b", "(or (not a) (not b))"),
        // Keywords in any case, whitespace anywhere, prefixes are only prefixes before a quote.
        (
            "A EQ 1 AND B Ne 2 Or NOT C",
            "(or (and (eq A 1) (ne B 2)) (not C))",
        ),
        ("  ( ( A eq 1 ) )  ", "(eq A 1)"),
        ("A\teq\n1", "(eq A 1)"),
        ("(A eq 1)and(B eq 2)", "(and (eq A 1) (eq B 2))"),
        ("datetime eq 1", "(eq datetime 1)"),
        ("X eq 'a'", "(eq X 'a')"),
        ("_private ge 'a'", "(ge _private 'a')"),
    ];

    #[test]
    fn golden_filters_parse_to_the_expected_tree() {
        for (text, expected) in GOLDEN {
            match Filter::parse(text) {
                Ok(filter) => assert_eq!(sexpr(&filter), *expected, "parsing {text:?}"),
                Err(e) => panic!("parsing {text:?} failed: {e}"),
            }
        }
    }

    #[test]
    fn the_documentation_example_builds_this_exact_tree() {
        let prop = |name: &str| Operand::Property(name.to_string());
        let expected = Filter::And(
            Box::new(Filter::Compare {
                left: prop("PartitionKey"),
                op: CompareOp::Eq,
                right: Operand::Literal(Value::String("a".to_string())),
            }),
            Box::new(Filter::Or(
                Box::new(Filter::Compare {
                    left: prop("Age"),
                    op: CompareOp::Gt,
                    right: Operand::Literal(Value::Int32(30)),
                }),
                Box::new(Filter::Not(Box::new(Filter::Operand(prop("IsActive"))))),
            )),
        );
        let parsed = Filter::parse("PartitionKey eq 'a' and (Age gt 30 or not IsActive)").unwrap();
        assert_eq!(parsed, expected);
    }

    fn comparisons(n: usize) -> String {
        (0..n)
            .map(|i| format!("P{i} eq {i}"))
            .collect::<Vec<_>>()
            .join(" and ")
    }

    #[test]
    fn malformed_filters_fail_with_invalid_input_and_a_position() {
        let deep_parens = format!("{}A{}", "(".repeat(101), ")".repeat(101));
        let deep_nots = format!("{}A", "not ".repeat(101));
        let cases: &[(&str, &str)] = &[
            ("", "character 1: the filter is empty"),
            ("   ", "the filter is empty"),
            (
                "Age gt",
                "character 7: expected a property or a literal after `gt`, found the end",
            ),
            (
                "Name eq 'unterminated",
                "character 9: unterminated string literal",
            ),
            (
                "a eq 1 eq 2",
                "character 8: expected `and`, `or` or the end of the filter",
            ),
            (&comparisons(16), "more than 15 comparisons"),
            ("Age gt 30 and", "found the end of the filter"),
            ("(Age gt 30", "expected `)`, found the end of the filter"),
            (
                "Age gt 30)",
                "character 10: expected `and`, `or` or the end of the filter, found `)`",
            ),
            ("A eq 1 B eq 2", "found `B`"),
            ("A eq 1 and or B eq 2", "found `or`"),
            ("and", "found `and`"),
            ("A eq", "after `eq`"),
            ("A eq (1)", "after `eq`, found `(`"),
            ("()", "found `)`"),
            (
                "Age gt 1.5L",
                "Int64 literal (suffix L) must be a whole number",
            ),
            ("Age gt 9223372036854775808L", "out of range for Int64"),
            ("Age gt 99999999999999999999", "out of range for Int64"),
            ("X eq 1e400", "out of range for Double"),
            ("X eq 1.", "expected a digit after `.`"),
            ("X eq 1.e3", "expected a digit after `.`"),
            ("X eq 1e", "expected a digit in the exponent"),
            ("X eq 12abc", "character 6: invalid numeric literal"),
            ("X eq 1f", "invalid numeric literal"),
            ("X eq .5", "unexpected character `.`"),
            ("X eq +5", "unexpected character `+`"),
            ("X eq -x", "`-` must be followed by a number or `INF`"),
            (
                "X eq -INFINITY",
                "`-` must be followed by a number or `INF`",
            ),
            ("T eq datetime'yesterday'", "invalid datetime literal"),
            (
                "T eq datetime'1600-01-01T00:00:00Z'",
                "invalid datetime literal",
            ),
            ("G eq guid'nope'", "invalid guid literal"),
            ("B eq X'0A0'", "invalid binary literal"),
            ("B eq X'zz'", "invalid binary literal"),
            ("B eq X'é1'", "invalid binary literal"),
            ("Y eq foo'bar'", "unknown literal type `foo`"),
            ("not A eq 1", "write `not (A eq B)`"),
            ("not (A) eq 1", "would compare a negation"),
            ("(A eq 1) eq true", "cannot be compared again"),
            // Not boolean expressions at all (Azurite #1185: Azure refuses `1`).
            ("1", "must evaluate to a single boolean value"),
            ("(1)", "character 2: the $filter expression must evaluate"),
            ("'x'", "must evaluate to a single boolean value"),
            ("2.5 or A eq 1", "must evaluate to a single boolean value"),
            ("A eq 1 and 7L", "must evaluate to a single boolean value"),
            ("not 0", "must evaluate to a single boolean value"),
            ("datetime'2020-01-01T00:00:00Z'", "must evaluate"),
            (
                "guid'c9da6455-213d-42c9-9a79-3e9149a57833'",
                "must evaluate",
            ),
            ("X'0A'", "must evaluate to a single boolean value"),
            ("A & B", "character 3: unexpected character `&`"),
            ("A eq 1 && B eq 2", "unexpected character `&`"),
            ("startswith(Name, 'a')", "supports no functions"),
            ("Name eq \"x\"", "unexpected character `\"`"),
            ("é eq 'x' and", "found the end"),
            (
                "Ünïcödé eq 'x' or !",
                "character 19: unexpected character `!`",
            ),
            (&deep_parens, "deeper than 100 levels"),
            (&deep_nots, "deeper than 100 levels"),
        ];
        for (text, message) in cases {
            match Filter::parse(text) {
                Ok(filter) => panic!("{text:?} parsed as {filter:?}"),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::InvalidInput, "{text:?}");
                    assert!(e.message.contains(message), "{text:?}: {:?}", e.message);
                }
            }
        }
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(
            Filter::parse(&comparisons(15)).unwrap().comparison_count(),
            15
        );
        let bare = (0..16)
            .map(|i| format!("B{i}"))
            .collect::<Vec<_>>()
            .join(" or ");
        assert!(
            Filter::parse(&bare)
                .unwrap_err()
                .message
                .contains("more than 15")
        );
        let deep = format!("{}A{}", "(".repeat(100), ")".repeat(100));
        assert!(Filter::parse(&deep).is_ok());
        assert!(Filter::parse(&format!("{}A", "not ".repeat(100))).is_ok());
        let mixed = format!("{}A{}", "not (".repeat(50), ")".repeat(50));
        assert!(Filter::parse(&mixed).is_ok());
        let too_mixed = format!("not {mixed}");
        assert!(Filter::parse(&too_mixed).is_err());
    }

    #[test]
    fn hostile_input_fails_fast_without_overflowing_the_stack() {
        let huge = "(".repeat(1_000_000);
        assert!(
            Filter::parse(&huge)
                .unwrap_err()
                .message
                .contains("deeper than 100")
        );
        let nots = "not ".repeat(1_000_000);
        assert!(Filter::parse(&nots).is_err());
        let wide = comparisons(100_000);
        assert!(
            Filter::parse(&wide)
                .unwrap_err()
                .message
                .contains("more than 15")
        );
    }

    /// Fragments that make mostly well-formed filters, so the random inputs reach deep into the parser.
    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "(",
            ")",
            " and ",
            " or ",
            "not ",
            " eq ",
            " ne ",
            " gt ",
            " le ",
            "A",
            "PartitionKey",
            "'x'",
            "'it''s'",
            "'",
            "1",
            "-2",
            "3L",
            "1.5",
            "1e3",
            "NaN",
            "-INF",
            "true",
            "datetime'2020-01-01T00:00:00Z'",
            "guid'c9da6455-213d-42c9-9a79-3e9149a57833'",
            "X'0A'",
            "X'",
            "é",
            " ",
            "-",
            ".",
            "e",
            "L",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            if let Ok(filter) = Filter::parse(&text) {
                let again = Filter::parse(&filter.to_string()).unwrap();
                prop_assert_eq!(again.to_string(), filter.to_string());
            }
        }

        #[test]
        fn token_soup_parses_or_fails_cleanly(parts in prop::collection::vec(fragment(), 0..30)) {
            let text = parts.concat();
            match Filter::parse(&text) {
                Ok(filter) => {
                    prop_assert!(filter.comparison_count() <= MAX_FILTER_COMPARISONS);
                    let again = Filter::parse(&filter.to_string()).unwrap();
                    prop_assert_eq!(again.to_string(), filter.to_string());
                }
                Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidInput),
            }
        }
    }
}
