//! Account-key signatures: the HMAC both front ends verify and every client computes.
//!
//! Azure's Shared Key, Shared Key Lite and SAS all sign a canonical string with HMAC-SHA256 under the
//! account key and send it base64-encoded; Trestle's gRPC API signs its calls the same way. The REST
//! canonical forms live with the REST gateway; the gRPC canonical form lives here, because the SDK, the
//! benchmark harness and the node must compute it byte for byte alike:
//!
//! ```text
//! TRESTLE-HMAC-SHA256\n{gRPC method path}\n{account}\n{x-ms-date}\n{base64(SHA-256(request message))}
//! ```
//!
//! The message digest covers the protobuf encoding of the request, so a captured signature cannot be
//! replayed with another body; the date bounds replays of the same call to the server's clock-skew
//! window (as Shared Key does). Verification compares in constant time against every key of the
//! account, so either key of a pair works while the other is rotated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The first line of the gRPC string to sign: names the scheme, so a signature made for one canonical
/// form can never verify as another.
pub const GRPC_SCHEME_LINE: &str = "TRESTLE-HMAC-SHA256";

/// HMAC-SHA256 of `string_to_sign` under `key`, base64-encoded.
pub fn sign(key: &[u8], string_to_sign: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this arm exists only because the API returns a Result.
        Err(_) => String::new(),
    }
}

/// Whether `signature` is the signature of any of `strings_to_sign` under any of `keys`, compared in
/// constant time per candidate.
pub fn verify(keys: &[Vec<u8>], strings_to_sign: &[String], signature: &str) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for key in keys {
        for string in strings_to_sign {
            let expected = sign(key, string);
            ok |= expected.as_bytes().ct_eq(signature.as_bytes());
        }
    }
    ok.into()
}

/// Whether two secrets are equal, in time that depends only on their lengths.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The gRPC string to sign for one call (see the module header).
pub fn grpc_string_to_sign(method: &str, account: &str, date: &str, message: &[u8]) -> String {
    let digest = STANDARD.encode(Sha256::digest(message));
    format!("{GRPC_SCHEME_LINE}\n{method}\n{account}\n{date}\n{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_under_either_key_and_nothing_else() {
        let (k1, k2, other) = (b"key-one".to_vec(), b"key-two".to_vec(), b"other".to_vec());
        let s = grpc_string_to_sign("/m", "acct", "Tue, 01 Dec 2026 10:00:00 GMT", b"body");
        let sig = sign(&k2, &s);
        assert!(verify(
            &[k1.clone(), k2.clone()],
            std::slice::from_ref(&s),
            &sig
        ));
        assert!(!verify(
            &[k1.clone(), other],
            std::slice::from_ref(&s),
            &sig
        ));
        // Any change to the call, the account, the date or the body breaks the signature.
        for changed in [
            grpc_string_to_sign("/n", "acct", "Tue, 01 Dec 2026 10:00:00 GMT", b"body"),
            grpc_string_to_sign("/m", "acc2", "Tue, 01 Dec 2026 10:00:00 GMT", b"body"),
            grpc_string_to_sign("/m", "acct", "Tue, 01 Dec 2026 10:00:01 GMT", b"body"),
            grpc_string_to_sign("/m", "acct", "Tue, 01 Dec 2026 10:00:00 GMT", b"bodx"),
        ] {
            assert!(!verify(std::slice::from_ref(&k2), &[changed], &sig));
        }
        assert!(!verify(&[k2], &[s], ""));
    }

    #[test]
    fn the_canonical_form_is_stable() {
        // Pinned: clients in other languages compute exactly this.
        assert_eq!(
            grpc_string_to_sign("/trestle.table.v1.TableService/Get", "a", "d", b""),
            "TRESTLE-HMAC-SHA256\n/trestle.table.v1.TableService/Get\na\nd\n\
             47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
    }
}
