//! The two things we read out of an X.509 certificate ourselves: its expiry (`notAfter`, for
//! `micronode_tls_cert_not_after_seconds`) and its subject (the mTLS client identity).
//!
//! rustls and webpki verify certificates but do not expose these fields, and a full X.509
//! parser crate brings a dozen dependencies for two fields, so this is a small DER walker over
//! the fixed start of `TBSCertificate`. It only reads certificates that rustls has already
//! loaded (ours) or verified (a client's); anything malformed is `None`, never a panic.

/// One DER element: its tag and contents; `rest` is what follows it.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
    rest: &'a [u8],
}

/// Reads one element (definite lengths only, as DER requires).
fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut after_len) = after_tag.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return None;
        }
        let (bytes, tail) = after_len.split_at(n);
        after_len = tail;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if after_len.len() < len {
        return None;
    }
    let (body, rest) = after_len.split_at(len);
    Some(Tlv { tag, body, rest })
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const OID: u8 = 0x06;

/// The `validity` and `subject` elements of a DER certificate's `TBSCertificate`.
fn validity_and_subject(cert_der: &[u8]) -> Option<(&[u8], &[u8])> {
    let cert = tlv(cert_der).filter(|t| t.tag == SEQUENCE)?;
    let tbs = tlv(cert.body).filter(|t| t.tag == SEQUENCE)?;
    let mut field = tlv(tbs.body)?;
    if field.tag == 0xa0 {
        field = tlv(field.rest)?; // explicit [0] version
    }
    let signature = tlv(field.rest)?; // field is serialNumber
    let issuer = tlv(signature.rest)?;
    let validity = tlv(issuer.rest).filter(|t| t.tag == SEQUENCE)?;
    let subject = tlv(validity.rest).filter(|t| t.tag == SEQUENCE)?;
    Some((validity.body, subject.body))
}

/// The certificate's `notAfter` in Unix seconds.
pub(crate) fn not_after_unix(cert_der: &[u8]) -> Option<i64> {
    let (validity, _) = validity_and_subject(cert_der)?;
    let not_before = tlv(validity)?;
    let not_after = tlv(not_before.rest)?;
    parse_time(not_after.tag, not_after.body)
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950–2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 13 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 15 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The certificate's subject as an RFC 4514 string (`CN=client,O=Example`): last RDN first,
/// attributes we know by their short name, others by dotted OID.
pub(crate) fn subject(cert_der: &[u8]) -> Option<String> {
    let (_, mut rdns) = validity_and_subject(cert_der)?;
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let rdn = tlv(rdns).filter(|t| t.tag == SET)?;
        rdns = rdn.rest;
        let mut attrs = rdn.body;
        let mut one = Vec::new();
        while !attrs.is_empty() {
            let atv = tlv(attrs).filter(|t| t.tag == SEQUENCE)?;
            attrs = atv.rest;
            let oid = tlv(atv.body).filter(|t| t.tag == OID)?;
            let value = tlv(oid.rest)?;
            let value_der = &oid.rest[..oid.rest.len() - value.rest.len()];
            one.push(format!(
                "{}={}",
                attr_name(oid.body)?,
                attr_value(&value, value_der)
            ));
        }
        parts.push(one.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

fn attr_name(oid: &[u8]) -> Option<String> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN".to_owned(),
        [0x55, 0x04, 0x06] => "C".to_owned(),
        [0x55, 0x04, 0x07] => "L".to_owned(),
        [0x55, 0x04, 0x08] => "ST".to_owned(),
        [0x55, 0x04, 0x0a] => "O".to_owned(),
        [0x55, 0x04, 0x0b] => "OU".to_owned(),
        _ => dotted(oid)?,
    })
}

/// An OID's dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, _) = oid.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut acc: u64 = 0;
    for &b in &oid[1..] {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            out.push_str(&format!(".{acc}"));
            acc = 0;
        }
    }
    Some(out)
}

/// A string attribute, escaped as RFC 4514 asks; anything else as `#` and hex of its DER.
fn attr_value(v: &Tlv<'_>, der: &[u8]) -> String {
    // UTF8String, PrintableString, TeletexString (read as Latin-1), IA5String.
    let text: Option<String> = match v.tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(v.body).ok().map(str::to_owned),
        0x14 => Some(v.body.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    };
    let Some(text) = text else {
        let mut hex = String::from("#");
        for b in der {
            hex.push_str(&format!("{b:02x}"));
        }
        return hex;
    };
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\{:02x}", u32::from(c) & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(not_after: (i32, u8, u8), dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    /// notAfter reads back as the Unix time it was set to, in UTCTime and GeneralizedTime.
    #[test]
    fn not_after_reads_back() {
        // 2030-01-02 00:00:00 UTC and 2060-03-01 (GeneralizedTime from 2050 on).
        assert_eq!(
            not_after_unix(&cert((2030, 1, 2), &[])),
            Some(1_893_542_400)
        );
        assert_eq!(
            not_after_unix(&cert((2060, 3, 1), &[])),
            Some(2_845_324_800)
        );
    }

    /// The subject renders last RDN first, with escapes.
    #[test]
    fn subject_renders_as_rfc4514() {
        let der = cert(
            (2030, 1, 1),
            &[
                (DnType::CountryName, "DE"),
                (DnType::OrganizationName, "Acme, Inc"),
                (DnType::CommonName, "client-1"),
            ],
        );
        assert_eq!(
            subject(&der).as_deref(),
            Some("CN=client-1,O=Acme\\, Inc,C=DE")
        );
    }

    /// Junk, truncations and wrong tags give `None`, never a panic.
    #[test]
    fn malformed_input_is_none() {
        let der = cert((2030, 1, 1), &[(DnType::CommonName, "x")]);
        for cut in 0..der.len() {
            let _ = not_after_unix(&der[..cut]);
            let _ = subject(&der[..cut]);
        }
        assert_eq!(not_after_unix(b""), None);
        assert_eq!(not_after_unix(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_time(UTC_TIME, b"991332000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
    }
}
