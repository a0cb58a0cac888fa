//! Secrets: API tokens are generated here, kept only as SHA-256 digests, shown only by
//! a short prefix, and compared in constant time; the admin password is kept only as an
//! argon2id hash.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token diglot issues starts with this.
pub const TOKEN_PREFIX: &str = "dg-";
/// Random base62 characters after the prefix.
const TOKEN_RANDOM_CHARS: usize = 40;
/// A new token: `dg-` and 40 random base62 characters (~238 bits).
pub fn generate_token() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(TOKEN_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{random}")
}

/// SHA-256 of a token, lowercase hex: all diglot ever keeps of it.
pub fn digest(token: &str) -> String {
    // Into a buffer: `hex::encode` collects the digits one `char` at a time, which cost
    // every authenticated request 1,700 instructions.
    let mut hex = [0; 64];
    hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut hex).expect("32 bytes are 64 hex digits");
    std::str::from_utf8(&hex).expect("hex digits are ASCII").to_owned()
}

/// The start of a token, safe to show (`dg-AbCd`).
pub fn display_prefix(token: &str) -> String {
    // A short secret (a hand-picked API_TOKEN or keys-file line) would be largely given
    // away by its first characters: it is shown by none of them.
    if token.chars().count() < MIN_SHOWN_LENGTH {
        return "(short)".into();
    }
    token.chars().take(TOKEN_PREFIX.len() + 4).collect()
}

/// Secrets shorter than this show no prefix (generated tokens have 43 characters).
const MIN_SHOWN_LENGTH: usize = 24;

/// Whether two secrets (or digests) are equal, in time that does not depend on where
/// they differ.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The argon2id hash of `password` (default parameters, a random salt), as a PHC string.
/// Takes tens of milliseconds by design: call it off the async threads.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .expect("argon2 hashes with its default parameters")
}

/// Whether `password` is the one `hash` (a PHC string) was made from; a hash that cannot
/// be read matches nothing. As slow as hashing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A random value for sessions and CSRF tokens: 32 random bytes, URL-safe base64.
pub fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_right_and_only_digests_are_kept() {
        let token = generate_token();
        assert!(token.starts_with("dg-") && token.len() == 43, "{token}");
        assert!(token[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(generate_token(), token);
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(display_prefix(&token), token[..7]);
    }

    #[test]
    fn passwords_are_kept_as_argon2id_hashes() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("correct"));
        assert_ne!(hash, hash_password("correct horse"), "a random salt each time");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
