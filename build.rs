//! Converts the embedded `machine/*.yaml` tables to JSON at build time: the
//! binary then parses its default tables with serde_json, several times
//! faster than YAML, on every start. Tables given with `--machine DIR` are
//! still read as YAML at run time.

use std::path::Path;

fn convert(src: &Path, dst: &Path) {
    let Ok(entries) = std::fs::read_dir(src) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            convert(&path, &dst.join(&name));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // A table that does not parse is left out; the loader then reads its YAML
            // and reports the error with its position.
            // serde_yaml::Value keeps key order (rule and binding order matter).
            let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
                continue;
            };
            let _ = std::fs::create_dir_all(dst);
            let mut out = dst.join(&name);
            out.set_extension("json");
            let _ = std::fs::write(out, serde_json::to_string(&value).unwrap_or_default());
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=machine");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let out = std::env::var("OUT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
        .join("machine-json");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).ok();
    convert(Path::new("machine"), &out);
}
