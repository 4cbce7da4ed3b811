//! MEMBERS: the announce addresses of every running container with a label, optionally waiting for enough.

use std::time::Duration;

use super::discover::{announce, DiscoverError};
use super::Shared;
use super::{arg_str, is_keyword, parse_int, CommandError};
use crate::docker::{DockerError, LabelFilter};
use crate::protocol::Reply;

/// `MEMBERS [LABEL key[=value]] [MIN n] [TIMEOUT ms] [WITHNAMES]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Only containers with this label.
    pub label: Option<LabelFilter>,
    /// Wait until at least this many are visible.
    pub min: usize,
    /// How long to wait for them; `None` waits up to the server's limit.
    pub timeout: Option<Duration>,
    /// Follow each announce string with its container's name.
    pub with_names: bool,
}

/// One member: its announce string and the container name DISCOVER knows it by.
type Member = (String, String);

impl Members {
    /// Parses the arguments after `MEMBERS`.
    pub fn parse(args: &[&[u8]]) -> Result<Self, CommandError> {
        let mut m = Members { label: None, min: 0, timeout: None, with_names: false };
        let mut rest = args.iter();
        while let Some(option) = rest.next() {
            if is_keyword(option, "WITHNAMES") {
                m.with_names = true;
                continue;
            }
            let value = rest.next().ok_or(CommandError::Syntax)?;
            if is_keyword(option, "LABEL") {
                let label =
                    arg_str(value).parse().map_err(|e: String| CommandError::Invalid(format!("ERR {e}").into()))?;
                m.label = Some(label);
            } else if is_keyword(option, "MIN") {
                m.min = usize::try_from(parse_int(value)?).map_err(|_| CommandError::NotInteger)?;
            } else if is_keyword(option, "TIMEOUT") {
                let ms = u64::try_from(parse_int(value)?)
                    .map_err(|_| CommandError::Invalid("ERR timeout is negative".into()))?;
                // As in Redis's blocking commands, 0 means no timeout of the client's own.
                m.timeout = (ms > 0).then(|| Duration::from_millis(ms));
            } else {
                return Err(CommandError::Syntax);
            }
        }
        Ok(m)
    }

    /// Answers the sorted announce strings (each followed by its container's name with `WITHNAMES`), waiting
    /// for `min` of them when asked to.
    pub async fn apply(self, shared: &Shared) -> Reply {
        let limit = shared.config.max_members_wait;
        let wait = self.timeout.map_or(limit, |t| t.min(limit));
        let mut changes = shared.ports.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changes.borrow_and_update();
            let members = match self.snapshot(shared).await {
                Ok(m) => m,
                Err(e) => return DiscoverError::from_docker(e, shared.config.docker_timeout).reply(),
            };
            if members.len() >= self.min {
                return reply(members, self.with_names);
            }
            // The table announces each change; while it is stale, Docker is asked again now and then.
            let poll = tokio::time::sleep(Duration::from_millis(500));
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return Reply::error(format!(
                        "TIMEOUT only {} of {} members visible after {} ms",
                        members.len(),
                        self.min,
                        wait.as_millis()
                    ));
                }
                _ = changes.changed() => {}
                _ = poll, if !shared.ports.is_fresh() => {}
            }
        }
    }

    async fn snapshot(&self, shared: &Shared) -> Result<Vec<Member>, DockerError> {
        // The port table holds only containers with the required label, and lists only running ones.
        let mut members: Vec<Member> = shared
            .ports
            .list()
            .await?
            .iter()
            .filter(|c| self.label.as_ref().is_none_or(|l| c.has_label(l)))
            .filter_map(|c| Some((announce(c, shared, None, None).ok()?.to_string(), c.name.clone())))
            .collect();
        members.sort();
        Ok(members)
    }
}

/// The announce strings, in order; with names, each followed by its container's name, as Redis answers
/// `WITHSCORES`: a flat array in RESP2, pairs in RESP3.
fn reply(members: Vec<Member>, with_names: bool) -> Reply {
    if with_names {
        Reply::Pairs(members.into_iter().map(|(announce, name)| (Reply::text(announce), Reply::text(name))).collect())
    } else {
        Reply::Array(members.into_iter().map(|(announce, _)| Reply::text(announce)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Members, CommandError> {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        Members::parse(&args)
    }

    #[test]
    fn options_parse_in_any_order() {
        let m = parse(&["min", "3", "LABEL", "app=redis", "timeout", "1500"]).unwrap();
        assert_eq!(m.min, 3);
        assert_eq!(m.label, Some("app=redis".parse().unwrap()));
        assert_eq!(m.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(parse(&[]).unwrap(), Members { label: None, min: 0, timeout: None, with_names: false });
        assert_eq!(parse(&["TIMEOUT", "0"]).unwrap().timeout, None);
    }

    #[test]
    fn withnames_is_a_flag_anywhere_among_the_options() {
        let m = parse(&["withnames", "LABEL", "app=redis", "MIN", "2"]).unwrap();
        assert!(m.with_names);
        assert_eq!((m.min, m.label), (2, Some("app=redis".parse().unwrap())));
        let m = parse(&["LABEL", "app=redis", "WithNames", "TIMEOUT", "100"]).unwrap();
        assert!(m.with_names);
        assert_eq!(m.timeout, Some(Duration::from_millis(100)));
        assert!(parse(&["MIN", "1", "WITHNAMES"]).unwrap().with_names);
        assert!(!parse(&["MIN", "1"]).unwrap().with_names);
        // A value is read as the option's value, whatever its text.
        assert_eq!(parse(&["MIN", "WITHNAMES"]).unwrap_err(), CommandError::NotInteger);
        assert_eq!(parse(&["WITHNAMES", "MIN"]).unwrap_err(), CommandError::Syntax);
        assert_eq!(parse(&["WITHNAME"]).unwrap_err(), CommandError::Syntax);
    }

    #[test]
    fn withnames_follows_each_announce_with_its_name() {
        let members = vec![
            ("10.0.0.1:30001@40001".to_string(), "rd_redis.2.x1".to_string()),
            ("10.0.0.2:30001@40001".to_string(), "rd_redis.1.y2".to_string()),
        ];
        let texts = |words: &[&str]| Reply::Array(words.iter().map(|w| Reply::text(*w)).collect());
        assert_eq!(reply(members.clone(), false), texts(&["10.0.0.1:30001@40001", "10.0.0.2:30001@40001"]));
        let pairs = reply(members, true);
        let mut resp2 = bytes::BytesMut::new();
        pairs.encode(crate::protocol::Protocol::Resp2, &mut resp2);
        let flat = texts(&["10.0.0.1:30001@40001", "rd_redis.2.x1", "10.0.0.2:30001@40001", "rd_redis.1.y2"]);
        let mut expected = bytes::BytesMut::new();
        flat.encode(crate::protocol::Protocol::Resp2, &mut expected);
        assert_eq!(resp2, expected, "RESP2: one flat array, as WITHSCORES");
        let mut resp3 = bytes::BytesMut::new();
        pairs.encode(crate::protocol::Protocol::Resp3, &mut resp3);
        assert!(resp3.starts_with(b"*2\r\n*2\r\n$20\r\n10.0.0.1:30001@40001\r\n"), "RESP3: pairs: {resp3:?}");
        assert_eq!(reply(Vec::new(), true), Reply::Pairs(Vec::new()));
    }

    #[test]
    fn bad_options_are_errors() {
        assert_eq!(parse(&["MIN"]).unwrap_err(), CommandError::Syntax);
        assert_eq!(parse(&["MIN", "-1"]).unwrap_err(), CommandError::NotInteger);
        assert_eq!(parse(&["SIZE", "1"]).unwrap_err(), CommandError::Syntax);
        assert!(matches!(parse(&["LABEL", "=x"]).unwrap_err(), CommandError::Invalid(_)));
        assert!(matches!(parse(&["TIMEOUT", "-5"]).unwrap_err(), CommandError::Invalid(_)));
    }
}
