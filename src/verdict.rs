//! The verdict of a CI run (`spicetap proxy --result FILE`,
//! `--result-junit FILE`, `--strict`): read back from the `session.json`
//! files the run wrote, once every recording is finished.
//!
//! A recording is *complete* when its session ended, and no channel had a
//! link error, a capture loss, a renderer that stopped, a draw the
//! renderer does not support, or a port decoder that stopped. Everything
//! else (bytes, messages, videos and their durations) is reported as
//! found.
//!
//! JUnit XML (the schema CI systems read, as Jenkins and GitLab use it):
//! one `<testsuite>` per session, one `<testcase>` for the session itself
//! and one per channel connection, a `<failure>` for each incomplete one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// A failure writing a verdict.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerdictError {
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a run recorded, session by session.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// Whether every session is complete.
    pub complete: bool,
    /// Sessions in the order they started.
    pub sessions: Vec<SessionVerdict>,
}

/// One session's recording.
#[derive(Debug, Default, Serialize)]
pub struct SessionVerdict {
    /// The session folder.
    pub folder: String,
    /// The SPICE session id.
    pub session_id: Option<u64>,
    /// Start and end (RFC 3339), from `session.json`.
    pub start: Option<String>,
    /// End; `None` for a session that did not finish.
    pub end: Option<String>,
    /// Whether the session and all its channels are complete.
    pub complete: bool,
    /// What makes the session itself incomplete.
    pub problems: Vec<String>,
    /// Its channel connections, in the order they opened.
    pub channels: Vec<ChannelVerdict>,
}

/// One channel connection's recording.
#[derive(Debug, Default, Serialize)]
pub struct ChannelVerdict {
    /// `<type>-<id>` (e.g. `display-0`), as its pcap is named.
    pub name: String,
    /// Bytes client to server, link stage included.
    pub bytes_client_to_server: u64,
    /// Bytes server to client, link stage included.
    pub bytes_server_to_client: u64,
    /// Messages client to server.
    pub messages_client_to_server: u64,
    /// Messages server to client.
    pub messages_server_to_client: u64,
    /// How the connection ended (`client_closed`, `link_failed`, ...).
    pub end_reason: Option<String>,
    /// Draws the renderer could not follow, by name.
    pub unsupported_draws: BTreeMap<String, u64>,
    /// Video files with their durations.
    pub videos: Vec<VideoVerdict>,
    /// Whether this channel's recording is complete.
    pub complete: bool,
    /// What makes it incomplete.
    pub problems: Vec<String>,
}

/// A video a display channel left.
#[derive(Debug, Serialize)]
pub struct VideoVerdict {
    /// The MP4 file name.
    pub file: String,
    /// Seconds from its first frame to the end of its last.
    pub duration_s: f64,
}

impl Verdict {
    /// Reads the `session.json` of each folder in `folders`.
    pub fn from_folders(folders: &[PathBuf]) -> Self {
        let sessions: Vec<SessionVerdict> = folders.iter().map(|f| SessionVerdict::read(f)).collect();
        Self { complete: sessions.iter().all(|s| s.complete), sessions }
    }

    /// Writes the verdict as pretty JSON to `path`.
    ///
    /// # Errors
    /// [`VerdictError`] when the file cannot be written.
    pub fn write_json(&self, path: &Path) -> Result<(), VerdictError> {
        let io = |source| VerdictError::Io { path: path.to_path_buf(), source };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(e.into()))?;
        std::fs::write(path, text).map_err(io)
    }

    /// Writes the verdict as JUnit XML to `path`.
    ///
    /// # Errors
    /// [`VerdictError`] when the file cannot be written.
    pub fn write_junit(&self, path: &Path) -> Result<(), VerdictError> {
        let io = |source| VerdictError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        self.junit(&mut out).map_err(io)?;
        out.flush().map_err(io)
    }

    fn junit<W: Write>(&self, out: W) -> std::io::Result<()> {
        let mut w = Writer::new_with_indent(out, b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let cases = |s: &SessionVerdict| s.channels.len() + 1;
        let failed = |s: &SessionVerdict| {
            usize::from(!s.problems.is_empty()) + s.channels.iter().filter(|c| !c.complete).count()
        };
        let tests: usize = self.sessions.iter().map(cases).sum();
        let failures: usize = self.sessions.iter().map(failed).sum();
        let mut root = BytesStart::new("testsuites");
        root.push_attribute(("name", "spicetap"));
        root.push_attribute(("tests", tests.to_string().as_str()));
        root.push_attribute(("failures", failures.to_string().as_str()));
        w.write_event(Event::Start(root))?;
        for s in &self.sessions {
            let suite_name = format!("session {}", s.session_id.unwrap_or(0));
            let mut suite = BytesStart::new("testsuite");
            suite.push_attribute(("name", suite_name.as_str()));
            suite.push_attribute(("tests", cases(s).to_string().as_str()));
            suite.push_attribute(("failures", failed(s).to_string().as_str()));
            w.write_event(Event::Start(suite))?;
            let class = format!("spicetap.session-{}", s.session_id.unwrap_or(0));
            test_case(&mut w, &class, "session", &s.problems)?;
            for c in &s.channels {
                test_case(&mut w, &class, &c.name, &c.problems)?;
            }
            w.write_event(Event::End(BytesEnd::new("testsuite")))?;
        }
        w.write_event(Event::End(BytesEnd::new("testsuites")))?;
        Ok(())
    }
}

/// One JUnit `<testcase>`, with a `<failure>` listing `problems` when
/// there are any.
pub(crate) fn test_case<W: Write>(
    w: &mut Writer<W>,
    class: &str,
    name: &str,
    problems: &[String],
) -> std::io::Result<()> {
    let mut case = BytesStart::new("testcase");
    case.push_attribute(("classname", class));
    case.push_attribute(("name", name));
    if problems.is_empty() {
        return w.write_event(Event::Empty(case));
    }
    w.write_event(Event::Start(case))?;
    let mut failure = BytesStart::new("failure");
    failure.push_attribute(("message", problems[0].as_str()));
    w.write_event(Event::Start(failure))?;
    w.write_event(Event::Text(BytesText::new(&problems.join("\n"))))?;
    w.write_event(Event::End(BytesEnd::new("failure")))?;
    w.write_event(Event::End(BytesEnd::new("testcase")))
}

impl SessionVerdict {
    fn read(folder: &Path) -> Self {
        let mut v = Self { folder: folder.display().to_string(), ..Self::default() };
        let json: Value = match std::fs::read(folder.join("session.json"))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(j) => j,
            Err(e) => {
                v.problems.push(format!("session.json: {e}"));
                return v;
            }
        };
        v.session_id = json["session_id"].as_u64();
        v.start = json["start"].as_str().map(str::to_string);
        v.end = json["end"].as_str().map(str::to_string);
        if v.end.is_none() {
            v.problems.push("the session did not finish".into());
        }
        let channels = json["channels"].as_array().map(Vec::as_slice).unwrap_or_default();
        v.channels = channels.iter().map(ChannelVerdict::from_report).collect();
        v.complete = v.problems.is_empty() && v.channels.iter().all(|c| c.complete);
        v
    }
}

impl ChannelVerdict {
    fn from_report(c: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let mut v = Self {
            name: format!("{}-{}", c["type"].as_str().unwrap_or("unknown"), c["channel_id"].as_u64().unwrap_or(0)),
            bytes_client_to_server: c["client_to_server"]["bytes"].as_u64().unwrap_or(0),
            bytes_server_to_client: c["server_to_client"]["bytes"].as_u64().unwrap_or(0),
            messages_client_to_server: c["client_to_server"]["messages"].as_u64().unwrap_or(0),
            messages_server_to_client: c["server_to_client"]["messages"].as_u64().unwrap_or(0),
            end_reason: text(&c["end"]["reason"]),
            ..Self::default()
        };
        if let Some(e) = text(&c["link_error"]) {
            v.problems.push(format!("link error: {e}"));
        }
        if let Some(e) = text(&c["capture_loss"]) {
            v.problems.push(format!("capture loss: {e}"));
        }
        if let Some(e) = text(&c["render"]["stopped"]) {
            v.problems.push(format!("renderer stopped: {e}"));
        }
        if let Some(u) = c["render"]["stats"]["unsupported"].as_object() {
            for (name, n) in u {
                v.unsupported_draws.insert(name.clone(), n.as_u64().unwrap_or(0));
            }
            if !u.is_empty() {
                let names: Vec<&str> = u.keys().map(String::as_str).collect();
                v.problems.push(format!("unsupported draws: {}", names.join(", ")));
            }
        }
        for decoder in ["usbredir", "port"] {
            if let Some(e) = text(&c[decoder]["stopped"]) {
                v.problems.push(format!("{decoder} decoder stopped: {e}"));
            }
        }
        if let (Some(file), Some(d)) =
            (text(&c["render"]["video"]["file"]["file"]), c["render"]["video"]["duration_s"].as_f64())
        {
            v.videos.push(VideoVerdict { file, duration_s: d });
        }
        v.complete = v.problems.is_empty();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(dir: &Path, json: Value) -> PathBuf {
        let f = dir.join(json["session_id"].to_string());
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("session.json"), json.to_string()).unwrap();
        f
    }

    #[test]
    fn complete_and_incomplete_recordings_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let good = session(
            tmp.path(),
            serde_json::json!({"session_id": 1, "start": "s", "end": "e", "channels": [
                {"type": "main", "channel_id": 0, "client_to_server": {"bytes": 10, "messages": 1},
                 "server_to_client": {"bytes": 20, "messages": 2}, "end": {"reason": "client_closed"}},
                {"type": "display", "channel_id": 0, "render": {"stats": {"unsupported": {}},
                 "video": {"file": {"file": "display-0.mp4"}, "duration_s": 1.5}}}]}),
        );
        let bad = session(
            tmp.path(),
            serde_json::json!({"session_id": 2, "start": "s", "channels": [
                {"type": "display", "channel_id": 0, "capture_loss": "fell behind <by> & more",
                 "render": {"stopped": "x", "stats": {"unsupported": {"DRAW_ALPHA_BLEND": 2}}}},
                {"type": "usbredir", "channel_id": 1, "usbredir": {"stopped": "bad hello"}}]}),
        );
        let missing = tmp.path().join("none");
        let v = Verdict::from_folders(&[good.clone(), bad.clone(), missing]);
        assert!(!v.complete);
        assert!(v.sessions[0].complete, "{:?}", v.sessions[0]);
        assert_eq!(v.sessions[0].channels[0].bytes_server_to_client, 20);
        assert_eq!(v.sessions[0].channels[1].videos[0].duration_s, 1.5);
        let b = &v.sessions[1];
        assert!(!b.complete);
        assert_eq!(b.problems, ["the session did not finish"]);
        assert_eq!(b.channels[0].problems.len(), 3, "{:?}", b.channels[0].problems);
        assert_eq!(b.channels[0].unsupported_draws["DRAW_ALPHA_BLEND"], 2);
        assert!(b.channels[1].problems[0].starts_with("usbredir decoder stopped"));
        assert!(v.sessions[2].problems[0].starts_with("session.json"));

        let xml_path = tmp.path().join("r.xml");
        v.write_junit(&xml_path).unwrap();
        let xml = std::fs::read_to_string(&xml_path).unwrap();
        // A real parser reads it back: 3 suites, 7 cases, 4 failures.
        let mut r = quick_xml::Reader::from_str(&xml);
        let (mut cases, mut failures, mut suites) = (0, 0, 0);
        loop {
            match r.read_event().unwrap() {
                Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                    b"testcase" => cases += 1,
                    b"failure" => failures += 1,
                    b"testsuite" => suites += 1,
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!((suites, cases, failures), (3, 7, 4), "{xml}");
        assert!(xml.contains("fell behind &lt;by&gt; &amp; more"), "{xml}");
        let json_path = tmp.path().join("r.json");
        v.write_json(&json_path).unwrap();
        let back: Value = serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
        assert_eq!(back["complete"], false);
    }
}
