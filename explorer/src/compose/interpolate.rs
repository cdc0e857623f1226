//! `${VAR}` interpolation as compose does it, from the project's `.env` only.

use std::path::Path;

use super::{ComposeError, Warning};

/// Replaces `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?message}` and `${VAR?message}` line by line, so lines keep their numbers.
pub fn interpolate(
    file: &Path,
    text: &str,
    variables: &[(String, String)],
    warnings: &mut Vec<Warning>,
) -> Result<String, ComposeError> {
    let lookup = |name: &str| {
        variables
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index as u64 + 1;
        let error = |message: String| ComposeError {
            file: file.to_path_buf(),
            line: line_no,
            message,
        };
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| error("`${` without a closing `}`".to_string()))?;
                let expr = &body[..end];
                out.push_str(&expand(expr, &lookup, line_no, file, warnings).map_err(error)?);
                rest = &body[end + 1..];
            } else {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if len == 0 {
                    out.push('$');
                } else {
                    out.push_str(
                        &expand(&after[..len], &lookup, line_no, file, warnings).map_err(error)?,
                    );
                }
                rest = &after[len..];
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

fn expand<'a>(
    expr: &str,
    lookup: &impl Fn(&str) -> Option<&'a str>,
    line: u64,
    file: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<String, String> {
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() {
        return Err(format!("`${{{expr}}}` has no variable name"));
    }
    let value = lookup(name);
    let (kind, arg) = if let Some(a) = op.strip_prefix(":-") {
        ("default-if-empty", a)
    } else if let Some(a) = op.strip_prefix('-') {
        ("default-if-unset", a)
    } else if let Some(a) = op.strip_prefix(":?") {
        ("error-if-empty", a)
    } else if let Some(a) = op.strip_prefix('?') {
        ("error-if-unset", a)
    } else if op.is_empty() {
        ("plain", "")
    } else {
        return Err(format!("`${{{expr}}}`: unsupported interpolation `{op}`"));
    };
    Ok(match (kind, value) {
        ("default-if-empty", None | Some("")) | ("default-if-unset", None) => arg.to_string(),
        ("error-if-empty", None | Some("")) | ("error-if-unset", None) => {
            return Err(format!("`{name}` must be set in .env: {arg}"))
        }
        (_, Some(v)) => v.to_string(),
        (_, None) => {
            warnings.push(Warning {
                file: file.to_path_buf(),
                line,
                field: format!("${{{name}}}"),
                message: format!(
                    "`{name}` is not set in .env (detvm never reads the host environment); it becomes an empty string"
                ),
            });
            String::new()
        }
    })
}
