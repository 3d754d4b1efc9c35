//! The validity period of an X.509 certificate, read straight from its DER: the start-up
//! self-test, the health check and ACME renewal all need only `notBefore`/`notAfter`, which
//! does not justify an X.509 parser dependency.

/// Reads `notBefore` and `notAfter` (Unix seconds) from a DER X.509 certificate.
pub fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(cert, 0x30)?;
    if tbs.first() == Some(&0xA0) {
        tbs = der_element(tbs, 0xA0)?.1; // explicit version
    }
    let tbs = der_element(tbs, 0x02)?.1; // serial
    let tbs = der_element(tbs, 0x30)?.1; // signature algorithm
    let tbs = der_element(tbs, 0x30)?.1; // issuer
    let (validity, _) = der_element(tbs, 0x30)?;
    let (not_before, rest) = der_time(validity)?;
    let (not_after, _) = der_time(rest)?;
    Some((not_before, not_after))
}

/// Splits one DER element of `tag` off the front: (its content, what follows).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

fn der_time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (tag, digits_year) = match input.first()? {
        0x17 => (0x17, 2),
        0x18 => (0x18, 4),
        _ => return None,
    };
    let (text, rest) = der_element(input, tag)?;
    let text = std::str::from_utf8(text).ok()?;
    let num = |from: usize, len: usize| text.get(from..from + len)?.parse::<u64>().ok();
    let mut year = num(0, digits_year)?;
    if digits_year == 2 {
        year += if year < 50 { 2000 } else { 1900 };
    }
    let o = digits_year;
    let (month, day, hour, min, sec) = (
        num(o, 2)?,
        num(o + 2, 2)?,
        num(o + 4, 2)?,
        num(o + 6, 2)?,
        num(o + 8, 2)?,
    );
    Some((
        unix_seconds(year, month, day)? + hour * 3600 + min * 60 + sec,
        rest,
    ))
}

/// Days from the civil date to 1970-01-01, in seconds (proleptic Gregorian calendar).
pub(crate) fn unix_seconds(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    days.checked_sub(719_468).map(|d| d * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_convert_to_unix_seconds() {
        assert_eq!(unix_seconds(1970, 1, 1), Some(0));
        assert_eq!(unix_seconds(2000, 3, 1), Some(951_868_800));
        assert_eq!(unix_seconds(2026, 11, 21), Some(1_795_219_200));
        assert_eq!(unix_seconds(2026, 13, 1), None);
    }

    #[test]
    fn a_generated_certificates_validity_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2025, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 6, 30);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (nb, na) = validity(cert.der()).expect("validity");
        assert_eq!(nb, unix_seconds(2025, 1, 2).expect("date"));
        assert_eq!(na, unix_seconds(2051, 6, 30).expect("date"));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
