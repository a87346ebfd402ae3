//! Cross-origin resource sharing, as the Table service does it: rules come from the account's service
//! properties (or the gateway config's defaults), preflight `OPTIONS` requests are answered without
//! authentication (200 with `Access-Control-*` headers, or 403 `CorsPreflightFailure`), and actual
//! requests that carry an `Origin` get `Access-Control-Allow-Origin` and friends when a rule matches.
//!
//! The first matching rule wins, in the order the rules were stored (Azure's rule).

use serde::{Deserialize, Serialize};

/// Azure allows five CORS rules per service.
pub const MAX_CORS_RULES: usize = 5;

/// Methods a CORS rule may allow.
pub const CORS_METHODS: [&str; 8] = [
    "DELETE", "GET", "HEAD", "MERGE", "POST", "OPTIONS", "PUT", "PATCH",
];

/// One CORS rule (Azure's `CorsRule`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CorsRule {
    /// Origins allowed (`*` for any).
    pub allowed_origins: Vec<String>,
    /// HTTP methods allowed.
    pub allowed_methods: Vec<String>,
    /// Request headers allowed: exact names, prefixes ending in `*`, or `*`.
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to the browser.
    pub exposed_headers: Vec<String>,
    /// How long the browser may cache the preflight answer.
    pub max_age_in_seconds: u32,
}

impl CorsRule {
    /// Checks the rule's fields against Azure's schema.
    pub fn validate(&self) -> Result<(), String> {
        if self.allowed_origins.is_empty() {
            return Err("a CORS rule needs at least one allowed origin".into());
        }
        if self.allowed_methods.is_empty() {
            return Err("a CORS rule needs at least one allowed method".into());
        }
        if let Some(bad) = self
            .allowed_methods
            .iter()
            .find(|m| !CORS_METHODS.contains(&m.to_ascii_uppercase().as_str()))
        {
            return Err(format!("{bad} is not a method CORS rules may allow"));
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    fn method_allowed(&self, method: &str) -> bool {
        self.allowed_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    }

    fn header_allowed(&self, header: &str) -> bool {
        self.allowed_headers.iter().any(|allowed| {
            if allowed == "*" {
                return true;
            }
            match allowed.strip_suffix('*') {
                Some(prefix) => header
                    .to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase()),
                None => allowed.eq_ignore_ascii_case(header),
            }
        })
    }

    /// Whether the rule allows any origin (then `Access-Control-Allow-Origin: *` without credentials).
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// The rule that allows a preflight request, if any.
pub fn match_preflight<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[String],
) -> Option<&'a CorsRule> {
    rules.iter().find(|rule| {
        rule.origin_allowed(origin)
            && rule.method_allowed(method)
            && request_headers.iter().all(|h| rule.header_allowed(h))
    })
}

/// The rule that applies to an actual request from `origin`, if any.
pub fn match_request<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
) -> Option<&'a CorsRule> {
    rules
        .iter()
        .find(|rule| rule.origin_allowed(origin) && rule.method_allowed(method))
}

/// Whether an actual request's answer carries `Vary: Origin`. Azure's CORS documentation ("Understanding
/// the Vary header") sets it on GET and HEAD answers when CORS is enabled for the service and either the
/// matching rule names the origin exactly or no rule matches (the answer depends on the Origin), and
/// not when the matching rule allows every origin (`*`: the answer is the same for all). Other methods'
/// answers are not cached, and Azure does not set it on them.
pub fn vary_by_origin(rules: &[CorsRule], matched: Option<&CorsRule>, method: &str) -> bool {
    let cacheable = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    cacheable && !rules.is_empty() && !matched.is_some_and(CorsRule::any_origin)
}

/// The value of `Access-Control-Allow-Origin` for a rule that matched `origin`.
pub fn allow_origin_value(rule: &CorsRule, origin: &str) -> String {
    if rule.any_origin() {
        "*".to_string()
    } else {
        origin.to_string()
    }
}

/// Splits an `Access-Control-Request-Headers` value.
pub fn split_header_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            exposed_headers: vec!["x-ms-request-id".into()],
            max_age_in_seconds: 30,
        }
    }

    #[test]
    fn preflight_matching_follows_origin_method_and_headers() {
        let rules = vec![
            rule(&["http://a.com"], &["GET"], &["x-ms-*", "content-type"]),
            rule(&["*"], &["PUT"], &["*"]),
        ];
        let headers = vec!["x-ms-version".to_string(), "Content-Type".to_string()];
        assert_eq!(
            match_preflight(&rules, "http://A.com", "GET", &headers),
            Some(&rules[0])
        );
        assert_eq!(
            match_preflight(&rules, "http://b.com", "GET", &headers),
            None
        );
        assert_eq!(
            match_preflight(&rules, "http://b.com", "PUT", &headers),
            Some(&rules[1])
        );
        assert_eq!(
            match_preflight(&rules, "http://a.com", "GET", &["authorization".into()]),
            None
        );
        assert_eq!(allow_origin_value(&rules[1], "http://b.com"), "*");
        assert_eq!(
            allow_origin_value(&rules[0], "http://a.com"),
            "http://a.com"
        );
        assert_eq!(
            match_request(&rules, "http://a.com", "get"),
            Some(&rules[0])
        );
    }

    #[test]
    fn vary_follows_azures_table() {
        let exact = rule(&["http://a.com"], &["GET", "PUT"], &[]);
        let any = rule(&["*"], &["GET"], &[]);
        let rules = vec![exact.clone(), any.clone()];
        // GET/HEAD: an exact match or no match varies by origin; a wildcard match does not.
        assert!(vary_by_origin(&rules, Some(&exact), "GET"));
        assert!(vary_by_origin(&rules, None, "HEAD"));
        assert!(!vary_by_origin(&rules, Some(&any), "GET"));
        // No rules at all (CORS disabled): no Vary. Other methods: no Vary.
        assert!(!vary_by_origin(&[], None, "GET"));
        assert!(!vary_by_origin(&rules, Some(&exact), "PUT"));
    }

    #[test]
    fn validation_and_header_lists() {
        assert!(rule(&["*"], &["GET"], &[]).validate().is_ok());
        assert!(rule(&[], &["GET"], &[]).validate().is_err());
        assert!(rule(&["*"], &["FETCH"], &[]).validate().is_err());
        assert_eq!(split_header_list(" a, b ,,c"), vec!["a", "b", "c"]);
    }
}
