//! `filter`: keep the rows for which a predicate holds.
//!
//! The predicate language: comparisons `=` (or `==`), `!=` (or `<>`), `<`,
//! `<=`, `>`, `>=` between columns and literals (numbers, 'strings' or
//! "strings", true, false); `col in (lit, ...)`; `col is null`,
//! `col is not null`; combined with `and`, `or`, `not` and parentheses.
//! Keywords are case-insensitive. Nulls follow SQL: a comparison with a
//! null is unknown, and rows whose predicate is unknown are dropped.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Datum, RecordBatch, Scalar, StringArray};
use arrow_schema::{DataType, Schema};

use crate::catalog::{FunctionInfo, Shape, p};
use crate::function::{Builtin, FunctionError, Invocation, PerBatch, Planned, StageSpec, per_batch};
use crate::params::{Params, column};

/// A parsed predicate, with columns resolved to indexes.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// The inner does not hold.
    Not(Box<Expr>),
    /// A comparison.
    Cmp(Operand, CmpOp, Operand),
    /// Membership in a list of literals.
    In(usize, Vec<ArrayRef>),
    /// `is null` (false) or `is not null` (true).
    IsNull(usize, bool),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// =
    Eq,
    /// !=
    Ne,
    /// <
    Lt,
    /// <=
    Le,
    /// >
    Gt,
    /// >=
    Ge,
}

/// A side of a comparison: a column, or a literal cast to the other side's type.
#[derive(Debug, Clone)]
pub enum Operand {
    /// A column index.
    Column(usize),
    /// A one-element array.
    Literal(ArrayRef),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Num(String),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => (out.push(Token::LParen), i += 1).1,
            ')' => (out.push(Token::RParen), i += 1).1,
            ',' => (out.push(Token::Comma), i += 1).1,
            '\'' | '"' => {
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    match s[j..].find(c) {
                        None => return Err(format!("unterminated string starting at column {}", i + 1)),
                        Some(k) => {
                            text.push_str(&s[j..j + k]);
                            j += k + 1;
                            if s[j..].starts_with(c) {
                                text.push(c);
                                j += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                out.push(Token::Str(text));
                i = j;
            }
            '=' | '!' | '<' | '>' => {
                let two = s.get(i..i + 2).unwrap_or("");
                let (op, len) = match two {
                    "==" => ("=", 2),
                    "!=" | "<>" => ("!=", 2),
                    "<=" => ("<=", 2),
                    ">=" => (">=", 2),
                    _ if c == '=' => ("=", 1),
                    _ if c == '<' => ("<", 1),
                    _ if c == '>' => (">", 1),
                    _ => return Err(format!("unexpected `!` at column {}", i + 1)),
                };
                out.push(Token::Op(op));
                i += len;
            }
            c if c.is_ascii_digit() || (c == '-' || c == '.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_digit() || matches!(b[j], b'.' | b'e' | b'E' | b'_')) {
                    if matches!(b[j], b'e' | b'E') && matches!(b.get(j + 1), Some(b'-' | b'+')) {
                        j += 1;
                    }
                    j += 1;
                }
                out.push(Token::Num(s[i..j].replace('_', "")));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'.') || b[j] >= 0x80) {
                    j += 1;
                }
                out.push(Token::Ident(s[i..j].to_string()));
                i = j;
            }
            other => return Err(format!("unexpected `{other}` at column {}", i + 1)),
        }
    }
    Ok(out)
}

/// A literal before it is given a type.
#[derive(Debug, Clone)]
enum Lit {
    Num(String),
    Str(String),
    Bool(bool),
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    schema: &'a Schema,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Token, what: &str) -> Result<(), String> {
        if self.peek() == Some(&t) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {what}, found {}", self.found()))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(Token::Ident(w) | Token::Num(w)) => format!("`{w}`"),
            Some(Token::Str(s)) => format!("'{s}'"),
            Some(Token::Op(o)) => format!("`{o}`"),
            Some(Token::LParen) => "`(`".into(),
            Some(Token::RParen) => "`)`".into(),
            Some(Token::Comma) => "`,`".into(),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.peek() == Some(&Token::LParen) {
            self.at += 1;
            let e = self.or()?;
            self.expect(Token::RParen, "`)`")?;
            return Ok(e);
        }
        self.comparison()
    }

    /// A column or a literal.
    fn operand(&mut self) -> Result<Result<usize, Lit>, String> {
        let t = self.peek().cloned();
        self.at += 1;
        Ok(match t {
            Some(Token::Num(n)) => Err(Lit::Num(n)),
            Some(Token::Str(s)) => Err(Lit::Str(s)),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("true") => Err(Lit::Bool(true)),
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("false") => Err(Lit::Bool(false)),
            Some(Token::Ident(w)) => Ok(column(self.schema, &w).map_err(|e| e.message)?),
            _ => {
                self.at -= 1;
                return Err(format!("expected a column or a value, found {}", self.found()));
            }
        })
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        if self.keyword("is") {
            let not = self.keyword("not");
            if !self.keyword("null") {
                return Err(format!("expected `null` after `is`, found {}", self.found()));
            }
            let col = left.map_err(|_| "`is null` applies to a column".to_string())?;
            return Ok(Expr::IsNull(col, not));
        }
        if self.keyword("in") {
            let col = left.map_err(|_| "`in` applies to a column".to_string())?;
            self.expect(Token::LParen, "`(` after `in`")?;
            let mut items = Vec::new();
            loop {
                let lit = self.operand()?.err().ok_or("`in` lists values, not columns")?;
                items.push(literal(&lit, self.schema.field(col).data_type())?);
                if self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                } else {
                    break;
                }
            }
            self.expect(Token::RParen, "`)` after the `in` list")?;
            return Ok(Expr::In(col, items));
        }
        let op = match self.peek() {
            Some(Token::Op(o)) => *o,
            _ => {
                return Err(format!(
                    "expected a comparison (=, !=, <, <=, >, >=, in, is null), found {}",
                    self.found()
                ));
            }
        };
        self.at += 1;
        let op = match op {
            "=" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        };
        let right = self.operand()?;
        let side = |this: &Result<usize, Lit>, other: &Result<usize, Lit>| -> Result<Operand, String> {
            match (this, other) {
                (Ok(c), _) => Ok(Operand::Column(*c)),
                (Err(l), Ok(c)) => Ok(Operand::Literal(literal(l, self.schema.field(*c).data_type())?)),
                (Err(_), Err(_)) => Err("a comparison needs at least one column".into()),
            }
        };
        Ok(Expr::Cmp(side(&left, &right)?, op, side(&right, &left)?))
    }
}

/// A literal as a one-element array of `ty`.
fn literal(lit: &Lit, ty: &DataType) -> Result<ArrayRef, String> {
    let text = match lit {
        Lit::Num(n) | Lit::Str(n) => n.clone(),
        Lit::Bool(b) => b.to_string(),
    };
    let raw: ArrayRef = Arc::new(StringArray::from(vec![text.clone()]));
    let options = arrow_cast::CastOptions { safe: false, ..Default::default() };
    arrow_cast::cast_with_options(&raw, ty, &options).map_err(|_| format!("`{text}` is not a valid {ty} value"))
}

/// Parses `predicate` against `schema`.
pub fn parse(predicate: &str, schema: &Schema) -> Result<Expr, String> {
    let mut p = Parser { tokens: lex(predicate)?, at: 0, schema };
    let e = p.or()?;
    if p.at < p.tokens.len() {
        return Err(format!("unexpected {} after the predicate", p.found()));
    }
    Ok(e)
}

/// Evaluates `e` over `batch`; null means unknown.
pub fn eval(e: &Expr, batch: &RecordBatch) -> Result<BooleanArray, arrow_schema::ArrowError> {
    use arrow_arith::boolean::{and_kleene, is_not_null, is_null, not, or_kleene};
    use arrow_ord::cmp;
    Ok(match e {
        Expr::And(a, b) => and_kleene(&eval(a, batch)?, &eval(b, batch)?)?,
        Expr::Or(a, b) => or_kleene(&eval(a, batch)?, &eval(b, batch)?)?,
        Expr::Not(a) => not(&eval(a, batch)?)?,
        Expr::IsNull(c, false) => is_null(batch.column(*c))?,
        Expr::IsNull(c, true) => is_not_null(batch.column(*c))?,
        Expr::In(c, items) => {
            let col = batch.column(*c);
            let mut acc = BooleanArray::from(vec![false; col.len()]);
            for item in items {
                acc = or_kleene(&acc, &cmp::eq(col, &Scalar::new(item.clone()))?)?;
            }
            acc
        }
        Expr::Cmp(l, op, r) => {
            let datum = |o: &Operand| -> Box<dyn Datum> {
                match o {
                    Operand::Column(c) => Box::new(batch.column(*c).clone()),
                    Operand::Literal(a) => Box::new(Scalar::new(a.clone())),
                }
            };
            let (l, r) = (datum(l), datum(r));
            let (l, r) = (l.as_ref(), r.as_ref());
            match op {
                CmpOp::Eq => cmp::eq(l, r)?,
                CmpOp::Ne => cmp::neq(l, r)?,
                CmpOp::Lt => cmp::lt(l, r)?,
                CmpOp::Le => cmp::lt_eq(l, r)?,
                CmpOp::Gt => cmp::gt(l, r)?,
                CmpOp::Ge => cmp::gt_eq(l, r)?,
            }
        }
    })
}

/// The registered `filter`.
pub struct Filter;

impl Builtin for Filter {
    fn info(&self) -> &'static FunctionInfo {
        &FILTER
    }

    fn plan(&self, spec: &StageSpec<'_>) -> Result<Arc<dyn Planned>, FunctionError> {
        let p = Params::new("filter", self.info().params, spec.params)?;
        let predicate = p.string("where");
        let schema = spec.input.clone();
        parse(&predicate, &schema).map_err(|m| FunctionError::permanent(format!("filter: {m} in `{predicate}`")))?;
        Ok(Arc::new(PerBatch {
            schema: spec.input.clone(),
            // The predicate is parsed once per container, at init.
            make: move || {
                let expr = parse(&predicate, &schema).map_err(FunctionError::permanent)?;
                Ok(per_batch(move |_: &Invocation<'_>, batch: &RecordBatch| {
                    let keep = eval(&expr, batch)?;
                    Ok(arrow_select::filter::filter_record_batch(batch, &keep)?)
                }))
            },
        }))
    }
}

/// `filter` in the catalog: what `fanout functions filter` says, and the
/// parameters validation checks.
pub(crate) const FILTER: FunctionInfo = {
    use crate::params::ParamType::*;
    FunctionInfo {
        name: "filter",
        shape: Shape::Map,
        summary: "keep the rows for which a predicate holds",
        doc: "The predicate compares columns with literals: = != < <= > >=, `col in (a, b)`, `col is null`, \
              `col is not null`, combined with and, or, not and parentheses. Strings are quoted with ' or \". \
              A comparison with a null is false.",
        params: &[p("where", Str, None, "the predicate, e.g. \"amount > 10 and country in ('DE', 'FR')\"")],
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array};
    use arrow_schema::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(10)])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(2.5), Some(1.0), None])),
                Arc::new(StringArray::from(vec![Some("DE"), Some("it's"), Some("FR"), None])),
            ],
        )
        .unwrap()
    }

    fn keep(predicate: &str) -> Vec<bool> {
        let b = batch();
        let e = parse(predicate, &b.schema()).unwrap();
        eval(&e, &b).unwrap().iter().map(|v| v == Some(true)).collect()
    }

    #[test]
    fn predicates_follow_sql() {
        assert_eq!(keep("n > 1"), [false, true, false, true]);
        assert_eq!(keep("n >= 5 and x > 1"), [false, true, false, false]);
        assert_eq!(keep("n = 1 or s = 'FR'"), [true, false, true, false]);
        assert_eq!(keep("not n > 1"), [true, false, false, false]);
        assert_eq!(keep("s in ('DE', \"FR\")"), [true, false, true, false]);
        assert_eq!(keep("s = 'it''s'"), [false, true, false, false]);
        assert_eq!(keep("n is null or x IS NOT NULL and n < 2"), [true, false, true, false]);
        assert_eq!(keep("(n = 1 or n = 10) and not (s is null)"), [true, false, false, false]);
        assert_eq!(keep("1 < n"), [false, true, false, true]);
        assert_eq!(keep("x <= 1.0"), [true, false, true, false]);
    }

    #[test]
    fn bad_predicates_say_why() {
        let s = batch().schema();
        assert_eq!(parse("n >", &s).unwrap_err(), "expected a column or a value, found the end");
        assert!(parse("m > 1", &s).unwrap_err().starts_with("no column `m` in the input; it has: n, x, s"));
        assert_eq!(parse("n > 'abc'", &s).unwrap_err(), "`abc` is not a valid Int64 value");
        assert_eq!(parse("n > 1 n", &s).unwrap_err(), "unexpected `n` after the predicate");
        assert_eq!(parse("s = 'x", &s).unwrap_err(), "unterminated string starting at column 5");
        assert!(parse("n ~ 1", &s).unwrap_err().starts_with("unexpected `~`"));
        assert!(parse("1 = 2", &s).unwrap_err().contains("at least one column"));
    }
}
