//! Reading a server's Prometheus metrics: a plain HTTP/1.1 GET of `/metrics` and a parser of the
//! text format's sample lines.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scrape of `/metrics`.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The response's `content-type`.
    pub content_type: String,
    /// The exposition text.
    pub text: String,
}

/// GETs `/metrics` from `addr`.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read the answer");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
    let content_type = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Scrape { content_type, text: body.to_owned() }
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include every pair of `labels`; 0 when
    /// there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(have, _)| labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v)))
            .map(|(_, value)| value)
            .sum()
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples(name).next().is_some()
    }

    /// The samples named `name`: their labels and value.
    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
        self.text.lines().filter(|line| !line.starts_with('#')).filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (sample_name == name).then(|| (parse_labels(labels), value.parse().unwrap_or(f64::NAN)))
        })
    }
}

/// `a="x",b="y"` into pairs (values here never hold quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}
