//! `DIGLOT_*` environment variables that name no setting: said, with the closest
//! setting's name, rather than silently ignored.

use serde_json::Value;

use super::Config;

/// `DIGLOT_*` variables that are not configuration: the profile (read by the command
/// line) and the test and benchmark tools' own (`DIGLOT_CLIENTS_HOME`, `DIGLOT_TEST_*`).
fn is_tooling(name: &str) -> bool {
    name == "DIGLOT_PROFILE" || name.ends_with("_HOME") || name.starts_with("DIGLOT_TEST_")
}

/// One warning per `DIGLOT_*` variable of this process whose first part names no
/// setting (a misspelt nested key is already an error when the configuration loads).
pub fn unknown_variables() -> Vec<String> {
    let settings = setting_variables();
    let mut warnings = Vec::new();
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("DIGLOT_") else {
            continue;
        };
        if is_tooling(name) {
            continue;
        }
        let first = rest.split("__").next().unwrap_or_default().to_ascii_uppercase();
        let known = settings
            .iter()
            .any(|s| s.strip_prefix("DIGLOT_").unwrap_or(s).split("__").next() == Some(first.as_str()));
        if known {
            continue;
        }
        let upper = name.to_ascii_uppercase();
        let closest = settings
            .iter()
            .map(|s| (strsim::levenshtein(&upper, s), s))
            .min()
            .filter(|(distance, s)| *distance * 3 <= s.len().max(upper.len()));
        warnings.push(match closest {
            Some((_, setting)) => format!("{name} names no setting and is ignored: did you mean {setting}?"),
            None => format!(
                "{name} names no setting and is ignored (settings are DIGLOT_ and the key, `__` between \
                 levels, e.g. DIGLOT_UPSTREAM__URL; profiles/default.toml lists them)"
            ),
        });
    }
    warnings.sort();
    warnings
}

/// Every setting as its variable: `DIGLOT_LISTEN`, `DIGLOT_UPSTREAM__URL`, ...
fn setting_variables() -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    walk(&format!("{prefix}__{}", key.to_ascii_uppercase()), value, out);
                }
            }
            _ => out.push(prefix.trim_start_matches("__").to_owned()),
        }
    }
    let mut out = Vec::new();
    walk(
        "",
        &serde_json::to_value(Config::default()).unwrap_or_default(),
        &mut out,
    );
    out.into_iter().map(|s| format!("DIGLOT_{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_misspelt_variable_is_named_with_the_closest_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DIGLOT_UPSTREM__URL", "http://a:1");
            jail.set_env("DIGLOT_UPSTREAM__URL", "http://a:1");
            jail.set_env("DIGLOT_CLIENTS_HOME", "/tmp");
            jail.set_env("DIGLOT_PROFILE", "default");
            jail.set_env("DIGLOT_TEST_CHILD_DB", "x");
            jail.set_env("DIGLOT_QQQQQQQQQQQQQQQQQQ", "x");
            let warnings = unknown_variables();
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(
                warnings[1].starts_with("DIGLOT_UPSTREM__URL")
                    && warnings[1].ends_with("did you mean DIGLOT_UPSTREAM__URL?"),
                "{warnings:?}"
            );
            assert!(warnings[0].contains("DIGLOT_QQQ") && !warnings[0].contains("did you mean"));
            Ok(())
        });
    }
}
