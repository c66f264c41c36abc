//! API tokens' text: `zm_{id}_{secret}`. Nodes keep only the id and the
//! SHA-256 of the secret; a new token's text is shown once.

use sha2::{Digest, Sha256};
use zeromesh_protocol::auth::{check_token_id, Role, TokenCommand, TOKEN_ID_HEX_DIGITS};

const SECRET_BYTES: usize = 32;
const MALFORMED: &str = "the token is not a zeromesh token (zm_<id>_<secret>)";

/// A new token's text (shown once) and the command that creates it.
pub fn mint(role: Role, agent: Option<String>) -> anyhow::Result<(String, TokenCommand)> {
    let mut bytes = [0u8; TOKEN_ID_HEX_DIGITS / 2 + SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness for a token: {error}"))?;
    let (id, secret) = bytes.split_at(TOKEN_ID_HEX_DIGITS / 2);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let secret_sha256 = Sha256::digest(secret.as_bytes()).into();
    Ok((format!("zm_{id}_{secret}"), TokenCommand::Create { id, secret_sha256, role, agent }))
}

/// The command that creates the admin token whose text is `token` (one
/// `mint` made, given back by an operator).
pub fn admin_command(token: &str) -> anyhow::Result<TokenCommand> {
    let (id, secret_sha256) = parse(token).map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(TokenCommand::Create { id: id.to_owned(), secret_sha256, role: Role::Admin, agent: None })
}

/// A token's id and the SHA-256 of its secret, if `token` has the shape of one.
pub fn parse(token: &str) -> Result<(&str, [u8; 32]), &'static str> {
    let rest = token.strip_prefix("zm_").ok_or(MALFORMED)?;
    let (id, secret) = rest.split_once('_').ok_or(MALFORMED)?;
    check_token_id(id).map_err(|_| MALFORMED)?;
    if secret.len() != SECRET_BYTES * 2 {
        return Err(MALFORMED);
    }
    Ok((id, Sha256::digest(secret.as_bytes()).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_to_its_id_and_secret_digest() {
        let (text, command) = mint(Role::Read, None).unwrap();
        let TokenCommand::Create { id, secret_sha256, .. } = command else { panic!("a create command") };
        assert_eq!(parse(&text).unwrap(), (id.as_str(), secret_sha256));
        for malformed in ["", "zm_", "zm_0123456789abcdef", "xx_0123456789abcdef_00", &text[..text.len() - 1]] {
            assert_eq!(parse(malformed), Err(MALFORMED), "{malformed:?}");
        }
    }
}
