//! What each HTTP request looks like: a weighted mix of request variants whose
//! path templates may name `{install}` (an install id picked with Zipf or
//! uniform popularity), `{key}` (a uniform key index) and `{seq}` (the request's
//! sequence number). Choosing and rendering are pure so they are unit-tested
//! here; this module does no I/O.

use bytes::Bytes;
use rand::Rng;

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Relative share of requests (weights need not sum to anything).
    pub weight: u32,
    pub method: http::Method,
    /// Path and query, possibly with placeholders.
    pub path: String,
    pub body: Bytes,
}

/// How `{install}` is chosen.
#[derive(Debug, Clone)]
pub struct Installs {
    pub ids: Vec<String>,
    /// Per-install bearer tokens (installs of different tenants need their
    /// own session); empty, or one entry per id.
    tokens: Vec<Option<String>>,
    /// Cumulative popularity, rank 1 first; last element is 1.0.
    cdf: Vec<f64>,
}

impl Installs {
    /// Zipf popularity with exponent `s` over `ids` in the given order (the first
    /// is the most popular); `s = 0` is uniform.
    pub fn zipf(ids: Vec<String>, s: f64) -> Installs {
        let weights: Vec<f64> = (1..=ids.len()).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Installs {
            ids,
            tokens: Vec::new(),
            cdf,
        }
    }

    /// Parses an installs file: one install per line, `<id>` or
    /// `<id> <bearer token>`; blank lines and `#` comments are skipped.
    pub fn parse(text: &str, s: f64) -> Installs {
        let (ids, tokens): (Vec<String>, Vec<Option<String>>) = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(char::is_whitespace) {
                Some((id, token)) => (id.to_owned(), Some(token.trim().to_owned())),
                None => (l.to_owned(), None),
            })
            .unzip();
        let mut installs = Installs::zipf(ids, s);
        if tokens.iter().any(Option::is_some) {
            installs.tokens = tokens;
        }
        installs
    }

    pub fn pick(&self, rng: &mut impl Rng) -> &str {
        self.ids[self.pick_index(rng)].as_str()
    }

    fn pick_index(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.r#gen();
        let i = self.cdf.partition_point(|&c| c < u);
        i.min(self.ids.len() - 1)
    }
}

/// The request mix of one HTTP target.
#[derive(Debug, Clone)]
pub struct Plan {
    variants: Vec<Variant>,
    total_weight: u64,
    installs: Option<Installs>,
    /// `{key}` ranges over `0..keys`.
    keys: u64,
}

/// A request ready to send.
#[derive(Debug)]
pub struct Rendered<'a> {
    pub method: &'a http::Method,
    pub path: std::borrow::Cow<'a, str>,
    pub body: &'a Bytes,
    /// The picked install's own bearer token, when the installs file has one.
    pub bearer: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("a request plan needs at least one variant with a non-zero weight")]
    Empty,
    #[error("path `{0}` uses {{install}} but no installs were given (--installs-file)")]
    NoInstalls(String),
    #[error("an installs list must not be empty")]
    EmptyInstalls,
}

impl Plan {
    pub fn new(
        variants: Vec<Variant>,
        installs: Option<Installs>,
        keys: u64,
    ) -> Result<Plan, PlanError> {
        let total_weight: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
        if total_weight == 0 {
            return Err(PlanError::Empty);
        }
        if let Some(i) = &installs
            && i.ids.is_empty()
        {
            return Err(PlanError::EmptyInstalls);
        }
        if installs.is_none()
            && let Some(v) = variants.iter().find(|v| v.path.contains("{install}"))
        {
            return Err(PlanError::NoInstalls(v.path.clone()));
        }
        Ok(Plan {
            variants,
            total_weight,
            installs,
            keys: keys.max(1),
        })
    }

    /// A single fixed request.
    pub fn single(method: http::Method, path: String, body: Bytes) -> Plan {
        Plan {
            variants: vec![Variant {
                weight: 1,
                method,
                path,
                body,
            }],
            total_weight: 1,
            installs: None,
            keys: 1,
        }
    }

    pub fn render(&self, seq: u64, rng: &mut impl Rng) -> Rendered<'_> {
        let v = self.choose(rng);
        let mut bearer = None;
        let path = if v.path.contains('{') {
            let mut p = v.path.replace("{seq}", &seq.to_string());
            if p.contains("{key}") {
                p = p.replace("{key}", &rng.gen_range(0..self.keys).to_string());
            }
            if let Some(installs) = &self.installs
                && p.contains("{install}")
            {
                let i = installs.pick_index(rng);
                p = p.replace("{install}", &installs.ids[i]);
                bearer = installs.tokens.get(i).and_then(Option::as_deref);
            }
            std::borrow::Cow::Owned(p)
        } else {
            std::borrow::Cow::Borrowed(v.path.as_str())
        };
        Rendered {
            method: &v.method,
            path,
            body: &v.body,
            bearer,
        }
    }

    fn choose(&self, rng: &mut impl Rng) -> &Variant {
        if self.variants.len() == 1 {
            return &self.variants[0];
        }
        let mut x = rng.gen_range(0..self.total_weight);
        for v in &self.variants {
            let w = u64::from(v.weight);
            if x < w {
                return v;
            }
            x -= w;
        }
        &self.variants[self.variants.len() - 1]
    }

    pub fn has_body(&self) -> bool {
        self.variants.iter().any(|v| !v.body.is_empty())
    }

    /// One line per variant, for the report's target description.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .variants
            .iter()
            .map(|v| {
                let share = 100.0 * f64::from(v.weight) / self.total_weight as f64;
                let body = if v.body.is_empty() {
                    String::new()
                } else {
                    format!(" ({} B body)", v.body.len())
                };
                format!("{share:.0}% {} {}{body}", v.method, v.path)
            })
            .collect();
        if let Some(i) = &self.installs {
            parts.push(format!("{} installs", i.ids.len()));
        }
        parts.join("; ")
    }
}

/// A deterministic body of `size` bytes (printable, so logs stay readable).
pub fn generated_body(size: usize) -> Bytes {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Bytes::from(
        (0..size)
            .map(|i| ALPHABET[i % ALPHABET.len()])
            .collect::<Vec<u8>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i{i}")).collect()
    }

    #[test]
    fn zipf_favours_the_first_install_and_reaches_the_last() {
        let installs = Installs::zipf(ids(100), 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 100];
        for _ in 0..100_000 {
            let id = installs.pick(&mut rng);
            let i: usize = id[1..].parse().expect("id");
            counts[i] += 1;
        }
        // Rank 1 has weight 1/H(100) ≈ 19 %; rank 2 half that.
        assert!(counts[0] > 15_000 && counts[0] < 23_000, "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        assert!(counts[99] > 0);
    }

    #[test]
    fn an_installs_file_may_give_each_install_its_own_token() {
        let installs = Installs::parse("# id token\na tok-a\n\nb\tTok-B \n", 0.0);
        assert_eq!(installs.ids, ["a", "b"]);
        let plan = Plan::new(
            vec![Variant {
                weight: 1,
                method: http::Method::GET,
                path: "/api/ext/{install}/hello".into(),
                body: Bytes::new(),
            }],
            Some(installs),
            1,
        )
        .expect("plan");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for seq in 0..50 {
            let r = plan.render(seq, &mut rng);
            match r.path.as_ref() {
                "/api/ext/a/hello" => assert_eq!(r.bearer, Some("tok-a")),
                "/api/ext/b/hello" => assert_eq!(r.bearer, Some("Tok-B")),
                other => panic!("unexpected path {other}"),
            }
        }
        // Without tokens the target's own headers are used.
        let plain = Installs::parse("a\nb\n", 0.0);
        assert!(plain.tokens.is_empty());
    }

    #[test]
    fn zipf_zero_is_uniform() {
        let installs = Installs::zipf(ids(4), 0.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[installs.pick(&mut rng)[1..].parse::<usize>().expect("id")] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn placeholders_are_rendered_and_weights_respected() {
        let get = Variant {
            weight: 9,
            method: http::Method::GET,
            path: "/api/ext/{install}/storage/get?key=k{key}".into(),
            body: Bytes::new(),
        };
        let put = Variant {
            weight: 1,
            method: http::Method::POST,
            path: "/api/ext/{install}/storage/put?key=k{key}&n={seq}".into(),
            body: generated_body(3),
        };
        let plan = Plan::new(vec![get, put], Some(Installs::zipf(ids(3), 1.0)), 5).expect("plan");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut posts = 0;
        for seq in 0..1000 {
            let r = plan.render(seq, &mut rng);
            assert!(!r.path.contains('{'), "{}", r.path);
            assert!(r.path.starts_with("/api/ext/i"));
            if r.method == http::Method::POST {
                posts += 1;
                assert!(r.path.ends_with(&format!("&n={seq}")));
                assert_eq!(&r.body[..], b"abc");
            }
        }
        assert!((50..150).contains(&posts), "{posts}");
    }

    #[test]
    fn install_placeholder_without_installs_is_refused() {
        let v = Variant {
            weight: 1,
            method: http::Method::GET,
            path: "/api/ext/{install}/hello".into(),
            body: Bytes::new(),
        };
        assert!(matches!(
            Plan::new(vec![v], None, 1),
            Err(PlanError::NoInstalls(_))
        ));
    }
}
