//! SRTP session-key derivation, RFC 3711 §4.3.1 with AES-CM as the PRF (§4.3.3), and RFC 6188 §3
//! for 256-bit master keys. Key derivation rate 0, the only rate DTLS-SRTP uses (RFC 5764
//! §4.1.2), so the index term `r` is always zero and the session keys never change.
//!
//! The AES itself is aws-lc-rs's CTR mode: AES-CM's keystream for an IV is exactly AES-CTR's
//! with the same 128-bit initial counter, and no derivation here needs more than 65,536 blocks,
//! so the 16-bit block counter in the IV's low octets never carries into the salt.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::iv::FixedLength;

/// RFC 3711 §4.3.1's label for the SRTP encryption key.
pub(super) const LABEL_RTP_ENCRYPTION: u8 = 0x00;
/// RFC 3711 §4.3.1's label for the SRTP session salt.
pub(super) const LABEL_RTP_SALT: u8 = 0x02;

/// The longest master salt the PRF takes: 112 bits (RFC 3711 §4.3.1). AEAD profiles use 96 bits,
/// which fill the first 12 of these octets (the rest zero), as libsrtp and str0m both do.
const PRF_SALT_LEN: usize = 14;

/// Fills `out` with the PRF output for `label` under a 16- or 32-byte `master_key`: the AES-CM
/// keystream from IV = (master_salt XOR (label << 48)) * 2^16, salt and key_id right-aligned in
/// 112 bits, so the label lands in the salt's octet 7.
pub(super) fn aes_cm_prf(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Result<(), Unspecified> {
    let algorithm = match master_key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(Unspecified),
    };
    if master_salt.len() > PRF_SALT_LEN {
        return Err(Unspecified);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    let key = EncryptingKey::ctr(UnboundCipherKey::new(algorithm, master_key)?)?;
    // CTR over zeros is the bare keystream.
    out.fill(0);
    key.less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp_rx::testutil::hex;

    fn prf(key: &str, salt: &str, label: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        aes_cm_prf(&hex(key), &hex(salt), label, &mut out).unwrap();
        out
    }

    /// RFC 3711 Appendix B.3, AES-128 CM PRF. The 94-octet authentication key runs the block
    /// counter through six blocks, the multi-block path.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let (key, salt) = ("E1F97A0D3E018BE0D64FA32C06DE4139", "0EC675AD498AFEEBB6960B3AABE6");
        assert_eq!(prf(key, salt, 0x00, 16), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(prf(key, salt, 0x02, 14), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            prf(key, salt, 0x01, 94),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    /// RFC 6188 §7.2, AES-256 CM PRF.
    #[test]
    fn rfc6188_7_2_key_derivation() {
        let key = "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6";
        let salt = "3b04803de51ee7c96423ab5b78d2";
        assert_eq!(prf(key, salt, 0x00, 32), hex("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4"));
        assert_eq!(prf(key, salt, 0x02, 14), hex("fa31791685ca444a9e07c6c64e93"));
        assert_eq!(prf(key, salt, 0x01, 20), hex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"));
    }

    #[test]
    fn refuses_other_key_and_salt_lengths() {
        let mut out = [0u8; 16];
        assert!(aes_cm_prf(&[0; 24], &[0; 12], 0, &mut out).is_err(), "AES-192 is no SRTP profile here");
        assert!(aes_cm_prf(&[0; 16], &[0; 15], 0, &mut out).is_err(), "a salt longer than 112 bits");
    }
}
