//! The parse edge: bytes from the network become a [`Message`] once, here, and nowhere else.
//!
//! Lines, folding and the start line are split by hand (RFC 3261 §7, §25.1), because that is
//! where the RFC 4475 torture cases live (bare LF, folded headers, `Via :`, leading CRLFs); URIs
//! and typed header values are parsed by `ezk-sip-types`. A parsed [`Request`] or [`Response`]
//! guarantees a top Via, From, To, Call-ID and CSeq, so nothing after this module needs to check
//! for them. A request too broken to route becomes a [`ParseError`] that still knows how to
//! answer (`400 <what is wrong>`, `505`, `416`), because RFC 3261 §8.2 wants an answer whenever
//! the headers needed for a response are there.

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sip_types::Name;
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::header::typed::{Contact, Routing, Via};
use ezk_sip_types::host::{Host, HostPort};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use std::fmt::{self, Write as _};

/// The Via branch prefix of RFC 3261 §8.1.1.7: a branch that starts with it is unique.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A SIP method, exactly as written: methods are case-sensitive (RFC 3261 §7.1), and a proxy
/// must forward ones it does not know (§16.3), so this is the token itself, not a closed enum.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(BytesStr);

impl Method {
    pub const INVITE: &'static str = "INVITE";
    pub const ACK: &'static str = "ACK";
    pub const CANCEL: &'static str = "CANCEL";
    pub const BYE: &'static str = "BYE";
    pub const REGISTER: &'static str = "REGISTER";
    pub const OPTIONS: &'static str = "OPTIONS";
    pub const MESSAGE: &'static str = "MESSAGE";
    pub const SUBSCRIBE: &'static str = "SUBSCRIBE";

    /// A method from its token; `None` if `text` is not a token.
    pub fn new(text: &str) -> Option<Method> {
        (!text.is_empty() && text.bytes().all(is_token_byte)).then(|| Method(BytesStr::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The methods RFC 3261 and its extensions define; others are extension methods.
pub const KNOWN_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "REGISTER",
    "OPTIONS",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "INFO",
    "UPDATE",
    "PRACK",
    "PUBLISH",
];

/// A request or a response, as read from the network.
#[derive(Clone, Debug)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Headers every request and response carries, parsed once (RFC 3261 §8.1.1).
#[derive(Clone, Debug)]
pub struct Common {
    /// Every Via value, top first.
    pub vias: Vec<Via>,
    pub from: Party,
    pub to: Party,
    pub call_id: BytesStr,
    pub cseq: u32,
    pub cseq_method: Method,
}

/// The From or To of a message (RFC 3261 §20.20, §20.39): what routing needs of it.
#[derive(Clone, Debug)]
pub struct Party {
    /// The URI when it is a SIP or SIPS URI; `None` for other schemes (`tel:` is legal here).
    pub uri: Option<SipUri>,
    /// The `tag` parameter.
    pub tag: Option<String>,
    /// The display name as sent, without its quotes and with quoted-pairs resolved; `None`
    /// when there is none (an addr-spec, or nothing before `<`). Not cleaned: it may hold
    /// control characters a quoted string let through.
    pub display: Option<String>,
}

impl Party {
    /// The user part of the URI: the extension, for To and From.
    pub fn user(&self) -> Option<&str> {
        self.uri.as_ref().and_then(uri_user)
    }
}

/// A SIP request with its guaranteed headers parsed.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub uri: SipUri,
    /// Every header as received (Via included), in order; typed views live in `common`.
    pub headers: ezk_sip_types::Headers,
    pub body: Bytes,
    pub common: Common,
}

/// A SIP response with its guaranteed headers parsed.
#[derive(Clone, Debug)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: ezk_sip_types::Headers,
    pub body: Bytes,
    pub common: Common,
}

/// Why bytes did not become a [`Message`], and how to answer if they were a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a SIP message at all (no start line we recognise): dropped, never answered.
    #[error("not a SIP message: {0}")]
    NotSip(&'static str),
    /// A malformed response: dropped and logged (RFC 3261 §18.1.2).
    #[error("malformed response: {0}")]
    Response(String),
    /// A request that must be answered with `status` and `reason` rather than processed.
    #[error("{status} {reason}")]
    Request {
        status: u16,
        reason: String,
        /// The headers a response copies from the request (RFC 3261 §8.2.6.2), raw; `None`
        /// when even those are missing, and then the request is dropped.
        echo: Option<Echo>,
    },
}

/// The raw Via, From, To, Call-ID and CSeq lines of a request we must reject, so a response can
/// be built even when one of them is the thing that is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    pub lines: Vec<(String, String)>,
    pub has_to_tag: bool,
}

/// The raw lines a response to these bytes must copy, if they look like a request at all.
pub fn echo_of(bytes: &[u8]) -> Option<Echo> {
    let raw = RawMessage::split(bytes).ok()?;
    matches!(raw.start, Start::Request { .. })
        .then(|| raw.echo())
        .flatten()
}

/// Parses one message. `stream` says whether it came over a stream transport, where
/// Content-Length is mandatory (RFC 3261 §18.3) and the framer already cut the body to it.
pub fn parse(bytes: &[u8], stream: bool) -> Result<Message, ParseError> {
    let raw = RawMessage::split(bytes)?;
    match raw.start {
        Start::Request {
            method,
            uri,
            version,
        } => parse_request(&raw, method, uri, version, stream),
        Start::Response { code, reason } => {
            parse_response(&raw, code, reason, stream).map_err(ParseError::Response)
        }
        Start::BadRequest => Err(ParseError::Request {
            status: 400,
            reason: "Bad Request Line".into(),
            echo: raw.echo(),
        }),
    }
}

impl Request {
    /// The top Via (guaranteed to exist).
    pub fn top_via(&self) -> &Via {
        &self.common.vias[0]
    }

    /// The user part of the Request-URI, if any.
    pub fn uri_user(&self) -> Option<&str> {
        uri_user(&self.uri)
    }

    /// The Max-Forwards value, or `None` if absent. Checked at parse time.
    pub fn max_forwards(&self) -> Option<u32> {
        single(&self.headers, &Name::MAX_FORWARDS).and_then(|v| v.trim().parse().ok())
    }

    /// Route values, top first (each parsed at parse time).
    pub fn routes(&self) -> Vec<Routing> {
        decode_list(&self.headers, &Name::ROUTE).unwrap_or_default()
    }

    /// Contact values (REGISTER and dialog-creating requests); `Err` names what is malformed.
    pub fn contacts(&self) -> Result<ContactList, String> {
        contacts(&self.headers)
    }

    /// Raw header values for `name`.
    pub fn header(&self, name: &Name) -> impl Iterator<Item = &str> {
        self.headers.get_raw(name).map(|v| v.as_str())
    }

    /// Serialises the request, with a Content-Length that matches the body.
    pub fn encode(&self) -> Bytes {
        let start = format!(
            "{} {} SIP/2.0",
            self.method,
            self.uri.print_ctx(PrintCtx {
                method: None,
                uri: Some(UriContext::ReqUri)
            })
        );
        encode(&start, &self.headers, &self.body)
    }
}

impl Response {
    pub fn top_via(&self) -> &Via {
        &self.common.vias[0]
    }

    /// Serialises the response, with a Content-Length that matches the body.
    pub fn encode(&self) -> Bytes {
        encode(
            &format!("SIP/2.0 {} {}", self.code, self.reason),
            &self.headers,
            &self.body,
        )
    }

    /// Contact values of the response (a 2xx to REGISTER, a 3xx).
    pub fn contacts(&self) -> Result<ContactList, String> {
        contacts(&self.headers)
    }
}

/// A Contact header: `*` or a list of addresses (RFC 3261 §20.10).
#[derive(Clone, Debug)]
pub enum ContactList {
    Star,
    Addresses(Vec<Contact>),
}

/// The user part of a SIP URI, if it has one.
pub fn uri_user(uri: &SipUri) -> Option<&str> {
    match &uri.user_part {
        SipUriUserPart::Empty => None,
        SipUriUserPart::User(u) => Some(u.as_str()),
        SipUriUserPart::UserPw(up) => Some(up.user.as_str()),
    }
}

/// Prints a URI as it appears inside `<>` in a header.
pub fn print_uri(uri: &SipUri) -> String {
    uri.print_ctx(PrintCtx {
        method: None,
        uri: Some(UriContext::Contact),
    })
    .to_string()
}

/// Prints any ezk header value.
pub fn print<T: ezk_sip_types::print::Print>(value: &T) -> String {
    value.print_ctx(PrintCtx::default()).to_string()
}

/// Puts `value` before every existing value of `name`. ezk's `Headers::insert_front` only
/// does that for a name not yet present (it appends otherwise), and Via and Record-Route
/// order is the route itself.
pub fn prepend(headers: &mut ezk_sip_types::Headers, name: Name, value: impl Into<BytesStr>) {
    let old = headers.remove(&name).unwrap_or_default();
    headers.insert(name.clone(), value.into());
    for v in old {
        headers.insert(name.clone(), v);
    }
}

/// Replaces every value of `name` with `values`, in order.
pub fn replace_all(
    headers: &mut ezk_sip_types::Headers,
    name: Name,
    values: impl IntoIterator<Item = String>,
) {
    headers.remove(&name);
    for v in values {
        headers.insert(name.clone(), BytesStr::from(v));
    }
}

/// The only value of a single-valued header.
pub fn single<'h>(headers: &'h ezk_sip_types::Headers, name: &Name) -> Option<&'h str> {
    headers.get_raw(name).next().map(|v| v.as_str())
}

/// Decodes every comma-separated element of every value of `name`; `Err` if any element does
/// not parse completely (ezk's own list decoder stops silently at the first bad element).
pub fn decode_list<H: HeaderParse>(
    headers: &ezk_sip_types::Headers,
    name: &Name,
) -> Result<Vec<H>, String> {
    let mut out = Vec::new();
    for value in headers.get_raw(name) {
        let src: Bytes = <BytesStr as AsRef<Bytes>>::as_ref(value).clone();
        let mut rest = value.as_str().trim();
        while !rest.is_empty() {
            let (remaining, item) = H::parse(&src, rest)
                .map_err(|_| format!("malformed {} header", name.as_print_str()))?;
            out.push(item);
            let remaining = remaining.trim_start();
            rest = match remaining.strip_prefix(',') {
                Some(r) if !r.trim().is_empty() => r.trim_start(),
                Some(_) => return Err(format!("malformed {} header", name.as_print_str())),
                None if remaining.is_empty() => "",
                None => return Err(format!("malformed {} header", name.as_print_str())),
            };
        }
    }
    Ok(out)
}

fn contacts(headers: &ezk_sip_types::Headers) -> Result<ContactList, String> {
    let values: Vec<&str> = headers
        .get_raw(&Name::CONTACT)
        .map(|v| v.as_str().trim())
        .collect();
    if values.contains(&"*") {
        return if values.len() == 1 {
            Ok(ContactList::Star)
        } else {
            Err("Contact * must be the only Contact".into())
        };
    }
    decode_list(headers, &Name::CONTACT)
        .map(ContactList::Addresses)
        .map_err(|_| "malformed Contact header".into())
}

fn encode(start: &str, headers: &ezk_sip_types::Headers, body: &[u8]) -> Bytes {
    let mut out = String::with_capacity(512 + body.len());
    out.push_str(start);
    out.push_str("\r\n");
    for (name, value) in headers.iter() {
        if *name == Name::CONTENT_LENGTH {
            continue;
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{}: {}\r\n", name.as_print_str(), value);
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

// ---- the raw split: start line, header lines, body ----

enum Start<'a> {
    Request {
        method: &'a str,
        uri: &'a str,
        version: &'a str,
    },
    Response {
        code: u16,
        reason: &'a str,
    },
    /// Looks like a request (it names a SIP version) but the line is malformed.
    BadRequest,
}

struct RawMessage<'a> {
    start: Start<'a>,
    /// (name, value) with folding already undone.
    headers: Vec<(&'a str, String)>,
    body: &'a [u8],
}

impl<'a> RawMessage<'a> {
    fn split(bytes: &'a [u8]) -> Result<RawMessage<'a>, ParseError> {
        // RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives, stray lines).
        let mut pos = 0;
        while pos < bytes.len() && (bytes[pos] == b'\r' || bytes[pos] == b'\n') {
            pos += 1;
        }
        let mut lines: Vec<&'a [u8]> = Vec::new();
        let body_start = loop {
            let Some(len) = bytes[pos..].iter().position(|&b| b == b'\n') else {
                // A head without its blank line: a datagram cut short, or not SIP.
                if lines.is_empty() {
                    return Err(ParseError::NotSip("no line end"));
                }
                let line = strip_cr(&bytes[pos..]);
                if !line.is_empty() {
                    lines.push(line);
                }
                break bytes.len();
            };
            let line = strip_cr(&bytes[pos..pos + len]);
            pos += len + 1;
            if line.is_empty() {
                break pos;
            }
            lines.push(line);
        };
        let body = &bytes[body_start..];
        let mut iter = lines.into_iter();
        let first = iter.next().ok_or(ParseError::NotSip("empty"))?;
        let first = std::str::from_utf8(first)
            .map_err(|_| ParseError::NotSip("start line is not UTF-8"))?;
        let start = parse_start(first)?;
        let mut headers: Vec<(&'a str, String)> = Vec::new();
        for line in iter {
            let text = String::from_utf8_lossy(line);
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                // RFC 3261 §7.3.1: a line starting with whitespace continues the previous one.
                match headers.last_mut() {
                    Some((_, value)) => {
                        value.push(' ');
                        value.push_str(text.trim());
                    }
                    None => return Err(bad_request(&start, "folded line before any header")),
                }
                continue;
            }
            let line = std::str::from_utf8(line)
                .map_err(|_| bad_request(&start, "header line is not UTF-8"))?;
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad_request(
                    &start,
                    &format!("header line without colon: {}", clip(line)),
                ));
            };
            let name = name.trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(bad_request(
                    &start,
                    &format!("bad header name: {}", clip(name)),
                ));
            }
            headers.push((name, value.trim().to_string()));
        }
        Ok(RawMessage {
            start,
            headers,
            body,
        })
    }

    fn header_map(&self) -> ezk_sip_types::Headers {
        let mut map = ezk_sip_types::Headers::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            map.insert(
                Name::from(BytesStr::from(*name)),
                BytesStr::from(value.as_str()),
            );
        }
        map
    }

    /// The lines a response must copy, raw (RFC 3261 §8.2.6.2).
    fn echo(&self) -> Option<Echo> {
        let wanted = [Name::VIA, Name::FROM, Name::TO, Name::CALL_ID, Name::CSEQ];
        let mut lines = Vec::new();
        for want in &wanted {
            for (name, value) in &self.headers {
                if Name::from(BytesStr::from(*name)) == *want {
                    lines.push((want.as_print_str().to_string(), value.clone()));
                }
            }
        }
        let has = |n: &Name| lines.iter().any(|(k, _)| k == n.as_print_str());
        if !(has(&Name::VIA) && has(&Name::CALL_ID) && has(&Name::CSEQ)) {
            return None;
        }
        let has_to_tag = lines
            .iter()
            .any(|(k, v)| k == Name::TO.as_print_str() && v.to_ascii_lowercase().contains(";tag="));
        Some(Echo { lines, has_to_tag })
    }
}

fn parse_start(line: &str) -> Result<Start<'_>, ParseError> {
    if let Some(rest) = strip_prefix_ci(line, "SIP/") {
        let (version, rest) = rest
            .split_once(' ')
            .ok_or(ParseError::NotSip("status line"))?;
        if version != "2.0" {
            return Err(ParseError::Response(format!(
                "unsupported version SIP/{version}"
            )));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| ParseError::Response(format!("bad status code {}", clip(code))))?;
        return Ok(Start::Response { code, reason });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // RFC 4475 §3.1.2.8-10: extra whitespace in the request line is a 400, not silence.
        return if line.contains("SIP/") {
            Ok(Start::BadRequest)
        } else {
            Err(ParseError::NotSip("no request or status line"))
        };
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || uri.is_empty() {
        return Err(ParseError::NotSip("bad request line"));
    }
    Ok(Start::Request {
        method,
        uri,
        version,
    })
}

fn parse_request(
    raw: &RawMessage<'_>,
    method: &str,
    uri: &str,
    version: &str,
    stream: bool,
) -> Result<Message, ParseError> {
    let reject = |status: u16, reason: String| ParseError::Request {
        status,
        reason,
        echo: raw.echo(),
    };
    if strip_prefix_ci(version, "SIP/").is_none() {
        return Err(reject(400, "Bad Request Line".into()));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(reject(505, "Version Not Supported".into()));
    }
    let method = Method::new(method).ok_or_else(|| reject(400, "Bad Method".into()))?;
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    let uri = match scheme.as_deref() {
        Some("sip" | "sips") => {
            parse_all::<SipUri>(uri).ok_or_else(|| reject(400, "Malformed Request-URI".into()))?
        }
        Some(s)
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            return Err(reject(416, "Unsupported URI Scheme".into()));
        }
        _ => return Err(reject(400, "Malformed Request-URI".into())),
    };
    // RFC 3261 §19.1.5: a Request-URI carries no headers (RFC 4475 §3.1.2.11).
    if !uri.header_params.is_empty() {
        return Err(reject(
            400,
            "Malformed Request-URI: Headers Not Allowed".into(),
        ));
    }
    let headers = raw.header_map();
    let common = common(&headers).map_err(|why| reject(400, why))?;
    if !(common.cseq_method.is(method.as_str())
        || method.is(Method::ACK)
        || method.is(Method::CANCEL))
    {
        // RFC 4475 §3.1.2.18: for a method we do not know, 501 is the better answer.
        if !KNOWN_METHODS.contains(&method.as_str()) {
            return Err(reject(501, "Not Implemented".into()));
        }
        return Err(reject(400, "CSeq Method Does Not Match Request".into()));
    }
    if (method.is(Method::ACK) || method.is(Method::CANCEL))
        && !common.cseq_method.is(method.as_str())
    {
        return Err(reject(400, "CSeq Method Does Not Match Request".into()));
    }
    if let Some(mf) = single(&headers, &Name::MAX_FORWARDS)
        && mf
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v <= 255)
            .is_none()
    {
        return Err(reject(400, "Malformed Max-Forwards".into()));
    }
    decode_list::<Routing>(&headers, &Name::ROUTE)
        .map_err(|_| reject(400, "Malformed Route header".into()))?;
    let body = body(&headers, raw.body, stream).map_err(|why| reject(400, why))?;
    Ok(Message::Request(Request {
        method,
        uri,
        headers,
        body,
        common,
    }))
}

fn parse_response(
    raw: &RawMessage<'_>,
    code: u16,
    reason: &str,
    stream: bool,
) -> Result<Message, String> {
    let headers = raw.header_map();
    let common = common(&headers)?;
    let body = body(&headers, raw.body, stream)?;
    Ok(Message::Response(Response {
        code,
        reason: reason.to_string(),
        headers,
        body,
        common,
    }))
}

fn common(headers: &ezk_sip_types::Headers) -> Result<Common, String> {
    let vias: Vec<Via> =
        decode_list(headers, &Name::VIA).map_err(|_| "Malformed Via header".to_string())?;
    if vias.is_empty() {
        return Err("Missing Via header".into());
    }
    let from = party(headers, &Name::FROM)?;
    let to = party(headers, &Name::TO)?;
    let call_id = match headers
        .get_raw(&Name::CALL_ID)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => return Err("Missing Call-ID header".into()),
        [one] if !one.trim().is_empty() && !one.contains(char::is_whitespace) => (*one).clone(),
        _ => return Err("Malformed Call-ID header".into()),
    };
    let (cseq, cseq_method) = match headers.get_raw(&Name::CSEQ).collect::<Vec<_>>().as_slice() {
        [] => return Err("Missing CSeq header".into()),
        [one] => parse_cseq(one).ok_or("Malformed CSeq header")?,
        _ => return Err("Malformed CSeq header".into()),
    };
    Ok(Common {
        vias,
        from,
        to,
        call_id,
        cseq,
        cseq_method,
    })
}

/// From or To, exactly once.
fn party(headers: &ezk_sip_types::Headers, name: &Name) -> Result<Party, String> {
    let values: Vec<&BytesStr> = headers.get_raw(name).collect();
    match values.as_slice() {
        [] => Err(format!("Missing {} header", name.as_print_str())),
        [value] => {
            parse_party(value).ok_or_else(|| format!("Malformed {} header", name.as_print_str()))
        }
        _ => Err(format!("Multiple {} headers", name.as_print_str())),
    }
}

/// `( name-addr / addr-spec ) *( SEMI param )`, with the LWS RFC 3261 allows around `;` and
/// `=` (RFC 4475 §3.1.1.1), quoted display names with escapes, and a refusal of what §25.1
/// forbids (an unbalanced quote, a comma in an unquoted display name: §3.1.2.6, §3.1.2.15).
pub fn parse_party(value: &str) -> Option<Party> {
    let v = value.trim();
    let (display, uri, params) = if let Some(rest) = v.strip_prefix('"') {
        let end = quoted_end(rest)?;
        let display = unquote(&rest[..end]);
        let rest = rest[end + 1..].trim_start();
        let inner = rest.strip_prefix('<')?;
        let close = inner.find('>')?;
        (Some(display), &inner[..close], &inner[close + 1..])
    } else if let Some(open) = v.find('<') {
        let display = v[..open].trim();
        if !display
            .split_whitespace()
            .all(|w| w.bytes().all(is_token_byte))
        {
            return None;
        }
        let close = v[open..].find('>')? + open;
        let display = (!display.is_empty()).then(|| display.to_string());
        (display, &v[open + 1..close], &v[close + 1..])
    } else {
        // addr-spec: parameters after the first ';' belong to the header (RFC 3261 §20.10).
        match v.find(';') {
            Some(i) => (None, &v[..i], &v[i..]),
            None => (None, v, ""),
        }
    };
    // Inside `<>` no whitespace is allowed at all (RFC 4475 §3.1.2.14); an addr-spec is trimmed.
    let uri = if v.contains('<') { uri } else { uri.trim() };
    if uri.is_empty() || uri.contains(char::is_whitespace) || uri.contains(['"', '<', '>']) {
        return None;
    }
    let scheme = uri.split_once(':')?.0.to_ascii_lowercase();
    let sip_uri = match scheme.as_str() {
        "sip" | "sips" => Some(parse_all::<SipUri>(uri)?),
        s if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            None
        }
        _ => return None,
    };
    let mut tag = None;
    let params = params.trim();
    if !params.is_empty() {
        let params = params.strip_prefix(';')?;
        for param in params.split(';') {
            let (name, val) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (param.trim(), None),
            };
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return None;
            }
            if let Some(val) = val {
                let quoted = val.starts_with('"') && val.ends_with('"') && val.len() >= 2;
                if val.is_empty()
                    || !(quoted || val.bytes().all(|b| is_token_byte(b) || b"[]:".contains(&b)))
                {
                    return None;
                }
            }
            if name.eq_ignore_ascii_case("tag") {
                tag = Some(val?.to_string());
            }
        }
    }
    Some(Party {
        uri: sip_uri,
        tag,
        display: display.filter(|d| !d.is_empty()),
    })
}

/// The text of a quoted string (its quotes already removed), quoted-pairs resolved.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Index of the closing quote of a quoted string whose opening quote was just consumed.
fn quoted_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// RFC 3261 §20.16: `CSeq: 1*DIGIT LWS Method`, the number below 2**31.
fn parse_cseq(value: &str) -> Option<(u32, Method)> {
    let mut parts = value.split_whitespace();
    let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let num: u32 = num.parse().ok().filter(|n| *n < 1 << 31)?;
    Some((num, Method::new(method)?))
}

/// The body, checked against Content-Length (RFC 3261 §18.3): over a datagram transport extra
/// bytes are discarded and a shortfall is an error; over a stream it is mandatory.
fn body(headers: &ezk_sip_types::Headers, body: &[u8], stream: bool) -> Result<Bytes, String> {
    let lengths: Vec<&str> = headers
        .get_raw(&Name::CONTENT_LENGTH)
        .map(|v| v.as_str())
        .collect();
    let declared = match lengths.as_slice() {
        [] if stream => return Err("Missing Content-Length".into()),
        [] => return Ok(Bytes::copy_from_slice(body)),
        [one] => one
            .trim()
            .parse::<usize>()
            .map_err(|_| "Malformed Content-Length".to_string())?,
        _ => return Err("Multiple Content-Length headers".into()),
    };
    if declared > body.len() {
        return Err("Content-Length Larger Than Body".into());
    }
    Ok(Bytes::copy_from_slice(&body[..declared]))
}

/// Parses one header value as `H`, requiring every byte to be consumed.
pub fn parse_all_header<H: HeaderParse>(text: &str) -> Option<H> {
    let src = Bytes::copy_from_slice(text.as_bytes());
    let text = std::str::from_utf8(&src).ok()?;
    match H::parse(&src, text) {
        Ok((rest, value)) if rest.trim().is_empty() => Some(value),
        _ => None,
    }
}

/// Parses `text` as `T` and requires every byte to be consumed.
pub fn parse_all<T: Parse>(text: &str) -> Option<T> {
    let src = Bytes::copy_from_slice(text.as_bytes());
    // Re-borrow from the owned copy so BytesStr slices point into `src`.
    let text = std::str::from_utf8(&src).ok()?;
    match T::parse(&src)(text) {
        Ok(("", value)) => Some(value),
        _ => None,
    }
}

fn bad_request(start: &Start<'_>, why: &str) -> ParseError {
    match start {
        Start::Request { .. } => ParseError::Request {
            status: 400,
            reason: capitalise(why),
            echo: None,
        },
        Start::Response { .. } => ParseError::Response(why.to_string()),
        Start::BadRequest => ParseError::Request {
            status: 400,
            reason: "Bad Request Line".into(),
            echo: None,
        },
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

fn clip(s: &str) -> String {
    s.chars().take(40).filter(|c| !c.is_control()).collect()
}

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The host and port a URI or Via names, as an address when the host is an IP literal.
pub fn host_addr(hp: &HostPort, default_port: u16) -> Option<std::net::SocketAddr> {
    let ip = match &hp.host {
        Host::IP4(ip) => std::net::IpAddr::V4(*ip),
        Host::IP6(ip) => std::net::IpAddr::V6(*ip),
        Host::Name(_) => return None,
    };
    Some(std::net::SocketAddr::new(
        ip,
        hp.port.unwrap_or(default_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@127.0.0.1>\r\n\
        From: Alice <sip:alice@127.0.0.1>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@127.0.0.1:5071>\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes(), false) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_invite_parses_with_its_guaranteed_headers() {
        let r = request(INVITE);
        assert!(r.method.is("INVITE"));
        assert_eq!(r.uri_user(), Some("bob"));
        assert_eq!(r.common.cseq, 314159);
        assert_eq!(r.common.from.tag.as_deref(), Some("1928301774"));
        assert_eq!(&r.body[..], b"v=0\n");
        assert_eq!(r.max_forwards(), Some(70));
    }

    #[test]
    fn display_names_are_read_quoted_or_not() {
        let display = |v: &str| parse_party(v).expect("parses").display;
        assert_eq!(display("Bob <sip:bob@h>").as_deref(), Some("Bob"));
        assert_eq!(
            display(r#""Ana \"A\" Lima" <sip:201@h>;tag=x"#).as_deref(),
            Some(r#"Ana "A" Lima"#)
        );
        assert_eq!(display(r#""" <sip:201@h>"#), None);
        assert_eq!(display("<sip:201@h>"), None);
        assert_eq!(display("sip:201@h;tag=x"), None);
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let r = request(INVITE);
        let again = request(std::str::from_utf8(&r.encode()).expect("utf8"));
        assert_eq!(again.common.call_id, r.common.call_id);
        assert_eq!(again.body, r.body);
    }

    #[test]
    fn bare_lf_compact_forms_and_folding_are_accepted() {
        let text = "OPTIONS sip:127.0.0.1 SIP/2.0\nv : SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\n\
            f: <sip:a@b>;tag=1\nt: <sip:c@d>\ni: abc\nCSeq: 1\n  OPTIONS\nl: 0\n\n";
        let r = request(text);
        assert!(r.common.cseq_method.is("OPTIONS"));
        assert_eq!(r.common.call_id.as_str(), "abc");
    }

    #[test]
    fn extension_methods_are_kept_exactly() {
        let r = request(&INVITE.replace("INVITE", "FOO"));
        assert!(r.method.is("FOO"));
        // Methods are case-sensitive: `invite` is an unknown method whose CSeq does not match.
        let lower = parse(INVITE.replace("INVITE sip", "invite sip").as_bytes(), false);
        assert!(
            matches!(lower, Err(ParseError::Request { status: 501, .. })),
            "{lower:?}"
        );
    }

    #[test]
    fn a_bad_version_gets_505_and_unknown_scheme_416() {
        let bad = parse(
            INVITE
                .replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")
                .as_bytes(),
            false,
        );
        assert!(
            matches!(
                bad,
                Err(ParseError::Request {
                    status: 505,
                    echo: Some(_),
                    ..
                })
            ),
            "{bad:?}"
        );
        let tel = parse(
            INVITE
                .replace("sip:bob@127.0.0.1 SIP", "tel:+1234 SIP")
                .as_bytes(),
            false,
        );
        assert!(
            matches!(tel, Err(ParseError::Request { status: 416, .. })),
            "{tel:?}"
        );
    }

    #[test]
    fn missing_call_id_gets_400_naming_it() {
        let text = INVITE.replace("Call-ID: a84b4c76e66710\r\n", "");
        match parse(text.as_bytes(), false) {
            Err(ParseError::Request {
                status: 400,
                reason,
                ..
            }) => assert_eq!(reason, "Missing Call-ID header"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_length_larger_than_body_is_rejected() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert!(matches!(
            parse(text.as_bytes(), false),
            Err(ParseError::Request { status: 400, .. })
        ));
    }

    #[test]
    fn garbage_is_not_sip() {
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"hello",
            b"\x00\xff\xfe",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(junk, false).is_err());
        }
    }
}
