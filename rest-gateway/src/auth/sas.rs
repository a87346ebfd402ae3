//! Shared access signatures: account SAS and service (table) SAS.
//!
//! Account SAS (`ss`, `srt`, `sp`, `se`, optional `st`, `sip`, `spr`):
//! `StringToSign = account\nsp\nss\nsrt\nst\nse\nsip\nspr\nsv\n` (versions from 2020-12-06 add the
//! encryption scope, `ses\n`; both forms are accepted).
//!
//! Table SAS (`tn`, `sp` from `raud`, `se`/`st` or a stored policy `si`, optional PartitionKey/RowKey range
//! `spk`, `srk`, `epk`, `erk`): `StringToSign = sp\nst\nse\n/table/{account}/{table}\nsi\nsip\nspr\nsv\n
//! spk\nsrk\nepk\nerk` (no trailing newline; the table name signed lowercase).
//!
//! The range is **enforced**: a point operation outside it is 403 `AuthorizationFailure`, and queries are
//! clipped to it (Azurite checks the signature over the range but never enforces it, issue #726).

use std::net::{IpAddr, Ipv4Addr};

use trestle_types::{DateTime, EntityKey, ErrorCode, QueryPage};

use super::{Accounts, AuthRequest, Credential, auth_failed, shared_key};
use crate::error::{ApiError, ApiResult};
use crate::service::TableService;

/// The SAS parameters of a request's query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SasParams {
    pub sv: Option<String>,
    pub ss: Option<String>,
    pub srt: Option<String>,
    pub sp: Option<String>,
    pub st: Option<String>,
    pub se: Option<String>,
    pub sip: Option<String>,
    pub spr: Option<String>,
    pub ses: Option<String>,
    pub tn: Option<String>,
    pub si: Option<String>,
    pub spk: Option<String>,
    pub srk: Option<String>,
    pub epk: Option<String>,
    pub erk: Option<String>,
    pub sig: String,
}

impl SasParams {
    /// Extracts SAS parameters from decoded query pairs; `None` when there is no `sig`.
    pub fn from_query(pairs: &[(String, String)]) -> Option<SasParams> {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // A `+` that the client left unencoded arrives as a space after form decoding; base64 has no spaces.
        let sig = get("sig")?.replace(' ', "+");
        Some(SasParams {
            sv: get("sv"),
            ss: get("ss"),
            srt: get("srt"),
            sp: get("sp"),
            st: get("st"),
            se: get("se"),
            sip: get("sip"),
            spr: get("spr"),
            ses: get("ses"),
            tn: get("tn"),
            si: get("si"),
            spk: get("spk"),
            srk: get("srk"),
            epk: get("epk"),
            erk: get("erk"),
            sig,
        })
    }

    /// The key range this SAS grants, if it names one.
    pub fn key_range(&self) -> KeyRange {
        KeyRange {
            start_pk: self.spk.clone(),
            start_rk: self.srk.clone(),
            end_pk: self.epk.clone(),
            end_rk: self.erk.clone(),
        }
    }
}

fn field(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

/// The account SAS strings to sign (legacy form and the 2020-12-06+ form with the encryption scope).
pub fn account_strings_to_sign(account: &str, p: &SasParams) -> Vec<String> {
    let base = format!(
        "{account}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        field(&p.sp),
        field(&p.ss),
        field(&p.srt),
        field(&p.st),
        field(&p.se),
        field(&p.sip),
        field(&p.spr),
        field(&p.sv)
    );
    let scoped = format!("{base}{}\n", field(&p.ses));
    vec![base, scoped]
}

/// The table SAS string to sign, with the table name as given (callers try the lowercase form first).
pub fn table_string_to_sign(account: &str, table: &str, p: &SasParams) -> String {
    format!(
        "{}\n{}\n{}\n/table/{account}/{table}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        field(&p.sp),
        field(&p.st),
        field(&p.se),
        field(&p.si),
        field(&p.sip),
        field(&p.spr),
        field(&p.sv),
        field(&p.spk),
        field(&p.srk),
        field(&p.epk),
        field(&p.erk)
    )
}

/// Parses a SAS time: ISO 8601 (`2024-01-01T00:00:00Z`) or a bare date (`2024-01-01`, midnight UTC).
pub fn parse_sas_time(text: &str) -> Option<DateTime> {
    if text.len() == 10 {
        return DateTime::parse(&format!("{text}T00:00:00Z"));
    }
    DateTime::parse(text)
}

/// Whether `ip` is allowed by a `sip` value (`a.b.c.d` or `a.b.c.d-e.f.g.h`, IPv4 as Azure supports).
pub fn ip_allowed(sip: &str, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    let parse = |s: &str| s.trim().parse::<Ipv4Addr>().ok();
    match sip.split_once('-') {
        Some((low, high)) => match (parse(low), parse(high)) {
            (Some(low), Some(high)) => low <= ip && ip <= high,
            _ => false,
        },
        None => parse(sip) == Some(ip),
    }
}

/// A PartitionKey/RowKey range granted by a table SAS. Bounds are inclusive; a start RowKey only applies
/// within the start PartitionKey and an end RowKey only within the end PartitionKey, as Azure defines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    pub start_pk: Option<String>,
    pub start_rk: Option<String>,
    pub end_pk: Option<String>,
    pub end_rk: Option<String>,
}

impl KeyRange {
    pub fn is_unbounded(&self) -> bool {
        self.start_pk.is_none() && self.end_pk.is_none()
    }

    /// The first key inside the range, if it has a lower bound.
    pub fn start(&self) -> Option<EntityKey> {
        let pk = self.start_pk.clone()?;
        Some(EntityKey::new(
            pk,
            self.start_rk.clone().unwrap_or_default(),
        ))
    }

    fn after_end(&self, key: &EntityKey) -> bool {
        match (&self.end_pk, &self.end_rk) {
            (None, _) => false,
            (Some(epk), None) => key.partition_key.as_str() > epk.as_str(),
            (Some(epk), Some(erk)) => {
                (key.partition_key.as_str(), key.row_key.as_str()) > (epk.as_str(), erk.as_str())
            }
        }
    }

    fn before_start(&self, key: &EntityKey) -> bool {
        match self.start() {
            None => false,
            Some(start) => key < &start,
        }
    }

    /// Whether the range grants access to `key`.
    pub fn contains(&self, key: &EntityKey) -> bool {
        !self.before_start(key) && !self.after_end(key)
    }

    /// Whether every key at or after `key` is outside the range (a query can stop there).
    pub fn is_past_end(&self, key: &EntityKey) -> bool {
        self.after_end(key)
    }

    /// Where a query clipped to this range starts: the caller's continuation, moved up to the range's
    /// first key when it is earlier (or absent).
    pub fn clip_start(&self, continuation: Option<EntityKey>) -> Option<EntityKey> {
        match self.start() {
            Some(start) if continuation.as_ref().is_none_or(|c| *c < start) => Some(start),
            _ => continuation,
        }
    }

    /// Clips one page of a query to this range: entities outside it are dropped, and once the scan has
    /// passed the range's end the continuation is cleared (nothing further can be inside). A clipped page
    /// may be short or empty while still carrying a continuation, which Azure's paging contract allows.
    pub fn clip_page(&self, page: &mut QueryPage) {
        let past_end = page.entities.iter().any(|e| self.is_past_end(&e.key()))
            || page.next.as_ref().is_some_and(|n| self.is_past_end(n));
        page.entities.retain(|e| self.contains(&e.key()));
        if past_end {
            page.next = None;
        }
    }
}

/// Whether `granted` (a permission string) includes every letter of `needed`.
pub fn has_permissions(granted: &str, needed: &str) -> bool {
    needed.chars().all(|c| granted.contains(c))
}

/// Authenticates a request carrying a SAS: signature (either account key), stored policy, times, IP
/// and protocol. Returns the credential whose permissions [`Credential::authorize`] then checks.
/// Used by the REST gateway and by the node's gRPC front end alike.
pub async fn authenticate(
    request: &AuthRequest<'_>,
    accounts: &Accounts,
    service: &dyn TableService,
    params: &SasParams,
) -> ApiResult<Credential> {
    let keys = accounts.keys(request.account)?;
    if params.sv.is_none() {
        return Err(auth_failed("The signed version (sv) is mandatory."));
    }
    let (start, expiry, credential) = match &params.tn {
        Some(table) => {
            let strings = vec![
                table_string_to_sign(request.account, &table.to_ascii_lowercase(), params),
                table_string_to_sign(request.account, table, params),
            ];
            if !shared_key::verify(keys, &strings, &params.sig) {
                return Err(auth_failed("Signature did not match."));
            }
            let (mut start, mut expiry, mut permissions) =
                (params.st.clone(), params.se.clone(), params.sp.clone());
            if let Some(id) = &params.si {
                let info = service
                    .get_table(request.account, table)
                    .await
                    .map_err(|_| {
                        auth_failed("The stored access policy of the signature could not be found.")
                    })?;
                let policy = info.policies.iter().find(|p| &p.id == id).ok_or_else(|| {
                    auth_failed(format!("The signed identifier {id} does not exist."))
                })?;
                let both = |url: &Option<String>, stored: bool| url.is_some() && stored;
                if both(&start, policy.start.is_some())
                    || both(&expiry, policy.expiry.is_some())
                    || both(&permissions, !policy.permission.is_empty())
                {
                    return Err(auth_failed(
                        "A field is specified both in the signature and in the stored access policy.",
                    ));
                }
                start = start.or(policy.start.map(|t| t.to_iso()));
                expiry = expiry.or(policy.expiry.map(|t| t.to_iso()));
                permissions =
                    permissions.or(Some(policy.permission.clone()).filter(|p| !p.is_empty()));
            }
            // Azure: "startpk must accompany startrk", "endpk must accompany endrk". A RowKey bound
            // without its PartitionKey names no range; refusing it keeps a token from granting more
            // than it names (it would otherwise cover the whole table).
            if params.srk.is_some() && params.spk.is_none() {
                return Err(auth_failed(
                    "The signed start row key (srk) requires a signed start partition key (spk).",
                ));
            }
            if params.erk.is_some() && params.epk.is_none() {
                return Err(auth_failed(
                    "The signed end row key (erk) requires a signed end partition key (epk).",
                ));
            }
            let permissions = permissions.unwrap_or_default();
            if permissions.chars().any(|c| !"raud".contains(c)) {
                return Err(auth_failed(
                    "The signed permissions are not valid for a table.",
                ));
            }
            let credential = Credential::TableSas {
                table: table.clone(),
                permissions,
                range: params.key_range(),
            };
            (start, expiry, credential)
        }
        None => {
            let strings = account_strings_to_sign(request.account, params);
            if !shared_key::verify(keys, &strings, &params.sig) {
                return Err(auth_failed("Signature did not match."));
            }
            if !params.ss.as_deref().unwrap_or("").contains('t') {
                return Err(ApiError::from_code(ErrorCode::AuthorizationServiceMismatch));
            }
            let credential = Credential::AccountSas {
                resource_types: params.srt.clone().unwrap_or_default(),
                permissions: params.sp.clone().unwrap_or_default(),
            };
            (params.st.clone(), params.se.clone(), credential)
        }
    };
    let expiry = expiry.ok_or_else(|| auth_failed("The signed expiry (se) is mandatory."))?;
    let expiry = parse_sas_time(&expiry)
        .ok_or_else(|| auth_failed("The signed expiry is not a valid time."))?;
    if request.now > expiry {
        return Err(auth_failed(
            "Signed expiry time must be after the current time.",
        ));
    }
    if let Some(start) = start {
        let start = parse_sas_time(&start)
            .ok_or_else(|| auth_failed("The signed start is not a valid time."))?;
        if request.now < start {
            return Err(auth_failed(
                "Signed start time must be before the current time.",
            ));
        }
    }
    if let Some(sip) = &params.sip
        && !request.peer.is_some_and(|ip| ip_allowed(sip, ip))
    {
        return Err(ApiError::from_code(
            ErrorCode::AuthorizationSourceIPMismatch,
        ));
    }
    let allows_http = |spr: &str| spr.split(',').any(|p| p.trim() == "http");
    if params.spr.as_deref().is_some_and(|spr| !allows_http(spr)) && !request.https {
        return Err(ApiError::from_code(
            ErrorCode::AuthorizationProtocolMismatch,
        ));
    }
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::auth::shared_key::sign;
    use crate::config::DEV_ACCOUNT_KEY;

    fn pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn parses_sdk_generated_table_sas() {
        let p = SasParams::from_query(&pairs(
            "se=2030-01-01T00%3A00%3A00Z&sp=raud&sv=2019-02-02&tn=mytable&spk=a&srk=1&epk=b&erk=9&sig=ab%2Bc%3D",
        ))
        .unwrap();
        assert_eq!(p.sig, "ab+c=");
        assert_eq!(p.tn.as_deref(), Some("mytable"));
        assert_eq!(
            table_string_to_sign("devstoreaccount1", "mytable", &p),
            "raud\n\n2030-01-01T00:00:00Z\n/table/devstoreaccount1/mytable\n\n\n\n2019-02-02\na\n1\nb\n9"
        );
        assert!(SasParams::from_query(&pairs("sv=x")).is_none());
        let unencoded = SasParams::from_query(&pairs("sig=a+b")).unwrap();
        assert_eq!(unencoded.sig, "a+b");
    }

    #[test]
    fn account_sas_string_to_sign_matches_the_python_sdk() {
        let p = SasParams::from_query(&pairs(
            "ss=t&srt=sco&sp=rwdlacu&se=2030-01-01T00%3A00%3A00Z&sv=2019-02-02&sig=x",
        ))
        .unwrap();
        let forms = account_strings_to_sign("devstoreaccount1", &p);
        assert_eq!(
            forms[0],
            "devstoreaccount1\nrwdlacu\nt\nsco\n\n2030-01-01T00:00:00Z\n\n\n2019-02-02\n"
        );
        assert_eq!(forms[1], format!("{}\n", forms[0]));
        // Reference signature computed with Python's hmac module over forms[0].
        let key = STANDARD.decode(DEV_ACCOUNT_KEY).unwrap();
        assert_eq!(
            sign(&key, &forms[0]),
            "Sf6ztOvy1ckXMaWcI5xoOPCUz6txhdW+qY5V7MM9DMY="
        );
    }

    #[test]
    fn key_ranges_are_inclusive_tuples() {
        let range = KeyRange {
            start_pk: Some("b".into()),
            start_rk: Some("5".into()),
            end_pk: Some("d".into()),
            end_rk: Some("5".into()),
        };
        let k = |pk: &str, rk: &str| EntityKey::new(pk, rk);
        assert!(!range.contains(&k("a", "9")));
        assert!(!range.contains(&k("b", "4")));
        assert!(range.contains(&k("b", "5")));
        assert!(range.contains(&k("c", "0")));
        assert!(range.contains(&k("d", "5")));
        assert!(!range.contains(&k("d", "6")));
        assert!(range.is_past_end(&k("e", "")));
        assert_eq!(range.start(), Some(k("b", "5")));

        let pk_only = KeyRange {
            start_pk: Some("b".into()),
            end_pk: Some("c".into()),
            ..KeyRange::default()
        };
        assert!(pk_only.contains(&k("b", "")));
        assert!(pk_only.contains(&k("c", "zzz")));
        assert!(!pk_only.contains(&k("cc", "")));
        assert!(KeyRange::default().contains(&k("anything", "")));
        assert!(KeyRange::default().is_unbounded());
    }

    #[test]
    fn ip_ranges_and_times() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_allowed("127.0.0.1", ip("127.0.0.1")));
        assert!(!ip_allowed("127.0.0.2", ip("127.0.0.1")));
        assert!(ip_allowed("10.0.0.0-10.0.0.255", ip("10.0.0.7")));
        assert!(!ip_allowed("10.0.0.0-10.0.0.255", ip("10.0.1.7")));
        assert!(ip_allowed("127.0.0.1", ip("::ffff:127.0.0.1")));
        assert!(!ip_allowed("garbage", ip("127.0.0.1")));
        assert_eq!(
            parse_sas_time("2030-01-01"),
            parse_sas_time("2030-01-01T00:00:00Z")
        );
        assert!(parse_sas_time("tomorrow").is_none());
        assert!(has_permissions("raud", "au"));
        assert!(!has_permissions("r", "a"));
    }
}
