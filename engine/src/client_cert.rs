//! The value of `X-Forwarded-Client-Cert` for a verified client certificate, in Envoy's
//! format: `Hash=<SHA-256, hex>`, then what `tls.client_cert_details` asks for
//! (`;Subject="<RFC 4514>"`, `;URI=...` and `;DNS=...` per alternative name). Verifying the
//! certificate is rustls' (`tls`); adding and dropping the field is `forward`'s.

use std::rc::Rc;

use config::CertDetails;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

/// The field value for the certificate `der`. Details that cannot be read (a certificate
/// rustls accepted but this parser does not) are left out, the hash never.
pub(crate) fn field_value(der: &[u8], details: CertDetails) -> Rc<[u8]> {
    use sha2::{Digest, Sha256};
    let mut out = b"Hash=".to_vec();
    for word in Sha256::digest(der).chunks(8) {
        let mut hex = [0u8; 16];
        crate::request_id::hex(&mut hex, u64::from_be_bytes(word.try_into().expect("8 bytes of 32")));
        out.extend_from_slice(&hex);
    }
    if !details.any() {
        return out.into();
    }
    let cert = match x509_cert::Certificate::from_der(der) {
        Ok(cert) => cert,
        Err(e) => {
            log::debug!("client certificate details left out of X-Forwarded-Client-Cert: {e}");
            return out.into();
        }
    };
    let tbs = &cert.tbs_certificate;
    if details.subject {
        element(&mut out, "Subject", &tbs.subject.to_string(), true);
    }
    let names = match tbs.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0,
        _ => Vec::new(),
    };
    for (key, wanted) in [("URI", details.uri), ("DNS", details.dns)] {
        for name in names.iter().filter(|_| wanted) {
            match (key, name) {
                ("URI", GeneralName::UniformResourceIdentifier(v)) | ("DNS", GeneralName::DnsName(v)) => {
                    element(&mut out, key, v.as_str(), false)
                }
                _ => {}
            }
        }
    }
    out.into()
}

/// Appends `;key=value`. The value is quoted when asked or when it holds a separator of the
/// field (`,`, `;`, `=`), with `"` and `\` escaped inside quotes; every byte outside
/// printable ASCII becomes `\XX` (RFC 4514's hex pairs), so no certificate can put a line
/// break or a control character into a header.
fn element(out: &mut Vec<u8>, key: &str, value: &str, quote: bool) {
    let quote = quote || value.bytes().any(|b| matches!(b, b',' | b';' | b'=' | b'"'));
    out.push(b';');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    if quote {
        out.push(b'"');
    }
    for b in value.bytes() {
        match b {
            b'"' | b'\\' if quote => out.extend_from_slice(&[b'\\', b]),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\{b:02X}").as_bytes()),
        }
    }
    if quote {
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_quoted_and_escaped_as_needed() {
        let cases = [
            ("DNS", "client.test", false, ";DNS=client.test"),
            ("URI", "spiffe://example.org/ns/a", false, ";URI=spiffe://example.org/ns/a"),
            ("Subject", "CN=a,O=B", true, ";Subject=\"CN=a,O=B\""),
            ("Subject", "CN=say \"hi\"\\", true, ";Subject=\"CN=say \\\"hi\\\"\\\\\""),
            ("URI", "x;y", false, ";URI=\"x;y\""),
            ("Subject", "CN=a\r\nX-Evil: 1", true, ";Subject=\"CN=a\\0D\\0AX-Evil: 1\""),
            ("Subject", "CN=caf\u{e9}", true, ";Subject=\"CN=caf\\C3\\A9\""),
        ];
        for (key, value, quote, want) in cases {
            let mut out = Vec::new();
            element(&mut out, key, value, quote);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{value:?}");
        }
    }

    #[test]
    fn a_certificate_that_does_not_parse_keeps_its_hash() {
        let all = CertDetails { subject: true, uri: true, dns: true };
        let v = field_value(b"not a certificate", all);
        assert!(v.starts_with(b"Hash=") && v.len() == 5 + 64, "{:?}", String::from_utf8_lossy(&v));
        assert_eq!(v, field_value(b"not a certificate", CertDetails::default()));
    }
}
