//! The arithmetic behind the `calculator` tool: a small recursive-descent parser and
//! evaluator over `f64`.
//!
//! Grammar, loosest binding first (`^` is right-associative and binds tighter than unary
//! minus, so `-2^2` is `-4` as in mathematics):
//! ```text
//! expr  := term (('+' | '-') term)*
//! term  := unary (('*' | '/' | '%') unary)*
//! unary := ('-' | '+') unary | power
//! power := atom ('^' unary)?
//! atom  := number | '(' expr ')'
//! ```
//! Written by hand rather than pulled in from a crate: it is tiny, and the popular
//! expression crates are either far larger than this or AGPL-licensed.

use thiserror::Error;

/// Deepest nesting of parentheses and unary signs; bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;

/// Why an expression has no value.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CalcError {
    /// `x / 0` or `x % 0`.
    #[error("division by zero")]
    DivisionByZero,
    /// Not an expression of the grammar.
    #[error("malformed expression at position {at}: {reason}")]
    Malformed {
        /// Byte offset where parsing failed.
        at: usize,
        /// What was expected.
        reason: &'static str,
    },
    /// More than [`MAX_DEPTH`] nested parentheses or signs.
    #[error("expression nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Overflow to infinity, or NaN.
    #[error("the result is not a finite number")]
    NotFinite,
}

impl CalcError {
    /// Stable code for `tool_completed.error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DivisionByZero => "DIVISION_BY_ZERO",
            Self::Malformed { .. } => "MALFORMED_EXPRESSION",
            Self::TooDeep => "EXPRESSION_TOO_DEEP",
            Self::NotFinite => "NOT_FINITE",
        }
    }
}

/// Evaluates an arithmetic expression with `+ - * / % ^`, parentheses, unary signs and
/// decimals.
pub fn evaluate(input: &str) -> Result<f64, CalcError> {
    let mut parser = Parser {
        src: input.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    parser.skip_spaces();
    if parser.pos < parser.src.len() {
        return Err(parser.malformed("unexpected character"));
    }
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::NotFinite)
    }
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.src.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `op` if it is the next non-space byte.
    fn eat(&mut self, op: u8) -> bool {
        self.skip_spaces();
        if self.src.get(self.pos) == Some(&op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn malformed(&self, reason: &'static str) -> CalcError {
        CalcError::Malformed {
            at: self.pos,
            reason,
        }
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(CalcError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut value = self.term()?;
        loop {
            if self.eat(b'+') {
                value += self.term()?;
            } else if self.eat(b'-') {
                value -= self.term()?;
            } else {
                return Ok(value);
            }
        }
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut value = self.unary()?;
        loop {
            if self.eat(b'*') {
                value *= self.unary()?;
            } else if self.eat(b'/') {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(CalcError::DivisionByZero);
                }
                value /= divisor;
            } else if self.eat(b'%') {
                let divisor = self.unary()?;
                if divisor == 0.0 {
                    return Err(CalcError::DivisionByZero);
                }
                value %= divisor;
            } else {
                return Ok(value);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        self.descend()?;
        let value = if self.eat(b'-') {
            -self.unary()?
        } else if self.eat(b'+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        if self.eat(b'^') {
            // The exponent is a `unary`, which recurses back here: right-associative.
            Ok(base.powf(self.unary()?))
        } else {
            Ok(base)
        }
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        if self.eat(b'(') {
            self.descend()?;
            let value = self.expr()?;
            if !self.eat(b')') {
                return Err(self.malformed("expected `)`"));
            }
            self.depth -= 1;
            return Ok(value);
        }
        self.skip_spaces();
        let start = self.pos;
        while self
            .src
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.malformed("expected a number or `(`"));
        }
        // The slice is ASCII digits and dots, so it is valid UTF-8; `parse` rejects `1.2.3`.
        let text = std::str::from_utf8(&self.src[start..self.pos]).unwrap_or_default();
        text.parse::<f64>().map_err(|_| CalcError::Malformed {
            at: start,
            reason: "not a number",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_with_precedence_and_associativity() {
        let cases = [
            ("2+3*4", 14.0),
            ("12*(3+4)", 84.0),
            ("(1.5+2.5)/4", 1.0),
            ("2^10", 1024.0),
            ("2^3^2", 512.0),
            ("-2^2", -4.0),
            ("2^-1", 0.5),
            ("10 - 4 - 3", 3.0),
            ("100 / 10 / 5", 2.0),
            ("17 % 5", 2.0),
            ("-(3 - 5) * --2", 4.0),
            (".5 + 1.", 1.5),
            ("  7  ", 7.0),
        ];
        for (input, expected) in cases {
            assert_eq!(evaluate(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn division_by_zero_is_an_error() {
        assert_eq!(evaluate("1/0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("5 % (2-2)"), Err(CalcError::DivisionByZero));
        assert_eq!(CalcError::DivisionByZero.code(), "DIVISION_BY_ZERO");
    }

    #[test]
    fn malformed_input_is_an_error() {
        for input in [
            "", "2+", "2+*3", "(1+2", "1+2)", "1.2.3", "abc", "2 3", "()",
        ] {
            let err = evaluate(input).expect_err(input);
            assert_eq!(err.code(), "MALFORMED_EXPRESSION", "{input}: {err}");
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(evaluate(&deep), Err(CalcError::TooDeep));
        assert_eq!(evaluate(&"-".repeat(500)), Err(CalcError::TooDeep));
        assert_eq!(evaluate("10^400"), Err(CalcError::NotFinite));
    }
}
