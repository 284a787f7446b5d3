//! What a target template may do, decided before it is ever rendered: substitutions, filters
//! that grow their input by a known factor, comparisons and if/else. No loops, assignments,
//! macros, includes or function calls, and no `*` or `**` (a string times a number is an
//! allocation of any size). From the template's syntax tree an upper bound of its output is
//! computed with every token field at its largest; a template whose bound is over the limit is
//! refused with a message naming the key. So no spec can make the operator allocate without
//! bound, whatever token arrives.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt, UnaryOpKind};
use minijinja::machinery::{WhitespaceConfig, parse};
use minijinja::syntax::SyntaxConfig;

// Tokens are visible ASCII (RFC 6749 VSCHAR) of bounded size, as the provider layer checks:
// that is what keeps the growth factors below small.
use crate::provider::{MAX_TOKEN_BYTES, MAX_TOKEN_TYPE_BYTES};
/// The most one rendered key may hold…
pub const MAX_KEY_BYTES: usize = 256 * 1024;
/// …and all of them together (a Secret holds at most 1 MiB).
pub const MAX_TOTAL_BYTES: usize = 768 * 1024;
/// Instructions one render may execute (with no loops, far more than any template needs).
pub const FUEL: u64 = 100_000;

/// Filters that never grow their input more than the given factor (plus a constant). Case
/// mapping can turn one character into three; `tojson` writes `<`, `>`, `&` and `'` as six-byte
/// escapes; `escape` writes `&quot;`.
const FILTERS: &[(&str, usize)] = &[
    ("upper", 3),
    ("lower", 3),
    ("title", 3),
    ("capitalize", 3),
    ("trim", 1),
    ("string", 1),
    ("safe", 1),
    ("first", 1),
    ("last", 1),
    ("reverse", 1),
    ("default", 1),
    ("d", 1),
    ("length", 1),
    ("count", 1),
    ("int", 1),
    ("float", 1),
    ("abs", 1),
    ("round", 1),
    ("urlencode", 3),
    ("escape", 6),
    ("e", 6),
    ("tojson", 6),
];

/// The filters a template may use.
pub fn allowed_filters() -> impl Iterator<Item = &'static str> {
    FILTERS.iter().map(|(name, _)| *name)
}

/// Filters that may take arguments, none of which can grow the output beyond the argument
/// itself (`default`), or at all (`round` precision, `trim` characters). Every other filter is
/// refused with arguments (`tojson(indent=…)` allocates the indent).
const FILTERS_WITH_ARGUMENTS: &[&str] = &["default", "d", "round", "trim"];

/// Tests that take no arguments and cannot fail (`divisibleby(0)` would).
const TESTS: &[&str] = &[
    "defined",
    "undefined",
    "none",
    "true",
    "false",
    "number",
    "string",
    "odd",
    "even",
    "lower",
    "upper",
];

/// Tests (`is defined`, …) yield a boolean.
const BOOLEAN: usize = 5;
/// A number printed (a float can take over 300 characters: `5e-324`).
const NUMBER: usize = 330;

/// The largest value of each field a template may use.
fn field_bound(name: &str) -> usize {
    match name {
        "access_token" => MAX_TOKEN_BYTES,
        "token_type" => MAX_TOKEN_TYPE_BYTES,
        "expires_at" | "issued_at" => 40,
        "lifetime_seconds" => NUMBER,
        // Anything else is undefined and renders empty.
        _ => 0,
    }
}

/// Why a template is not allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The parser's words.
    #[error("{0}")]
    Syntax(String),
    #[error(
        "its output could reach {bound} bytes with a {}-byte token; at most {} are allowed",
        MAX_TOKEN_BYTES,
        MAX_KEY_BYTES
    )]
    TooLarge { bound: usize },
    #[error("{0} is not allowed")]
    Statement(&'static str),
    #[error("`*` and `**` are not allowed")]
    Multiplication,
    #[error("the test `{0}` is not allowed")]
    Test(String),
    #[error("the filter `{0}` is not allowed")]
    Filter(String),
    #[error("the filter `{0}` takes no arguments here")]
    FilterArguments(String),
    #[error("function calls are not allowed")]
    Call,
}

/// An upper bound of the template's output in bytes, or why it is not allowed.
pub fn output_bound(source: &str) -> Result<usize, TemplateError> {
    let ast = parse(
        source,
        "template",
        SyntaxConfig,
        WhitespaceConfig::default(),
    )
    .map_err(|e| TemplateError::Syntax(e.kind().to_string()))?;
    let bound = stmt(&ast)?;
    if bound > MAX_KEY_BYTES {
        return Err(TemplateError::TooLarge { bound });
    }
    Ok(bound)
}

fn stmt(s: &Stmt<'_>) -> Result<usize, TemplateError> {
    Ok(match s {
        Stmt::Template(t) => sum(t.children.iter().map(stmt))?,
        Stmt::EmitRaw(r) => r.raw.len(),
        Stmt::EmitExpr(e) => expr(&e.expr)?,
        Stmt::IfCond(c) => {
            expr(&c.expr)?;
            sum(c.true_body.iter().map(stmt))?.max(sum(c.false_body.iter().map(stmt))?)
        }
        other => return Err(TemplateError::Statement(stmt_name(other))),
    })
}

fn stmt_name(s: &Stmt<'_>) -> &'static str {
    match s {
        Stmt::ForLoop(_) => "a for loop",
        Stmt::Set(_) | Stmt::SetBlock(_) => "set",
        Stmt::FilterBlock(_) => "a filter block",
        _ => "this statement",
    }
}

fn expr(e: &Expr<'_>) -> Result<usize, TemplateError> {
    Ok(match e {
        Expr::Var(v) => field_bound(v.id),
        Expr::Const(c) => c.value.to_string().len() + 2,
        // A part of a value is no larger than the value.
        Expr::GetAttr(a) => expr(&a.expr)?,
        Expr::GetItem(i) => {
            expr(&i.subscript_expr)?;
            expr(&i.expr)?
        }
        Expr::Slice(s) => {
            for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                expr(part)?;
            }
            expr(&s.expr)?
        }
        Expr::UnaryOp(u) => match u.op {
            UnaryOpKind::Not => {
                expr(&u.expr)?;
                BOOLEAN
            }
            UnaryOpKind::Neg => expr(&u.expr)?.max(NUMBER),
        },
        Expr::BinOp(b) => {
            let (left, right) = (expr(&b.left)?, expr(&b.right)?);
            match b.op {
                // Joining grows linearly: the sum of both sides.
                BinOpKind::Add | BinOpKind::Concat => left.saturating_add(right),
                BinOpKind::Mul | BinOpKind::Pow => {
                    return Err(TemplateError::Multiplication);
                }
                BinOpKind::Sub | BinOpKind::Div | BinOpKind::FloorDiv | BinOpKind::Rem => NUMBER,
                BinOpKind::ScAnd | BinOpKind::ScOr => left.max(right),
                _ => BOOLEAN,
            }
        }
        Expr::Compare(c) => {
            expr(&c.expr)?;
            for op in &c.ops {
                expr(&op.expr)?;
            }
            BOOLEAN
        }
        Expr::IfExpr(i) => {
            expr(&i.test_expr)?;
            let otherwise = match &i.false_expr {
                Some(f) => expr(f)?,
                None => 0,
            };
            expr(&i.true_expr)?.max(otherwise)
        }
        Expr::Test(t) => {
            if !TESTS.contains(&t.name) || !t.args.is_empty() {
                return Err(TemplateError::Test(t.name.into()));
            }
            expr(&t.expr)?;
            BOOLEAN
        }
        Expr::Filter(f) => {
            let Some(&(_, factor)) = FILTERS.iter().find(|(name, _)| *name == f.name) else {
                return Err(TemplateError::Filter(f.name.into()));
            };
            if !f.args.is_empty() && !FILTERS_WITH_ARGUMENTS.contains(&f.name) {
                return Err(TemplateError::FilterArguments(f.name.into()));
            }
            let input = match &f.expr {
                Some(e) => expr(e)?,
                None => 0,
            };
            // An argument can stand in for the input (`default`), never multiply it.
            input
                .max(args(&f.args)?)
                .saturating_mul(factor)
                .saturating_add(NUMBER)
        }
        Expr::List(l) => sum(l.items.iter().map(expr))?.saturating_add(2 * l.items.len()),
        Expr::Map(m) => {
            sum(m.keys.iter().chain(&m.values).map(expr))?.saturating_add(4 * m.keys.len())
        }
        Expr::Call(_) => return Err(TemplateError::Call),
    })
}

fn args(args: &[CallArg<'_>]) -> Result<usize, TemplateError> {
    let mut largest = 0;
    for a in args {
        let (CallArg::Pos(e)
        | CallArg::Kwarg(_, e)
        | CallArg::PosSplat(e)
        | CallArg::KwargSplat(e)) = a;
        largest = largest.max(expr(e)?);
    }
    Ok(largest)
}

fn sum(
    mut parts: impl Iterator<Item = Result<usize, TemplateError>>,
) -> Result<usize, TemplateError> {
    parts.try_fold(0usize, |total, part| Ok(total.saturating_add(part?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_templates_are_allowed() {
        for ok in [
            "Bearer {{ access_token }}",
            "{\"token\": {{ access_token | tojson }}, \"type\": \"{{ token_type | lower }}\"}",
            "{% if lifetime_seconds > 60 %}{{ access_token }}{% else %}short{% endif %}",
            "{{ access_token[:8] }}…{{ expires_at }}",
            "{{ token_type ~ ' ' ~ access_token | urlencode }}",
            "{{ (access_token if access_token is defined else 'none') | trim }}",
        ] {
            assert!(output_bound(ok).is_ok(), "{ok}: {:?}", output_bound(ok));
        }
        assert_eq!(output_bound("plain text").unwrap(), 10);
    }

    #[test]
    fn templates_that_could_allocate_without_bound_are_refused() {
        for (bad, why) in [
            ("{{ 'x' * 99999999 }}", "`*`"),
            ("{{ access_token ** 9 }}", "`*`"),
            (
                "{% for i in range(100000) %}{{ access_token }}{% endfor %}",
                "for loop",
            ),
            ("{% set a = access_token %}{{ a }}", "set"),
            ("{{ lipsum(100000) }}", "function calls"),
            ("{{ namespace(a=1) }}", "function calls"),
            ("{{ access_token | join(access_token) }}", "`join`"),
            (
                "{{ access_token | replace('a', access_token) }}",
                "`replace`",
            ),
            ("{{ access_token | indent(99999999) }}", "`indent`"),
            // Macros, includes and imports are not even compiled in: a syntax error.
            ("{% macro m() %}x{% endmacro %}", ""),
            ("{% include 'other' %}", ""),
            // Each filter is bounded, but chained they multiply past the limit.
            ("{{ access_token | e | e }}", "could reach"),
            (
                "{{ access_token | tojson(indent=1000000000000000) }}",
                "no arguments",
            ),
            (
                "{% if 3 is divisibleby(lifetime_seconds) %}x{% endif %}",
                "`divisibleby`",
            ),
            (
                "{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}{{ access_token }}",
                "could reach",
            ),
        ] {
            let err = output_bound(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(output_bound("{{ access_token ").is_err(), "a syntax error");
    }
}
