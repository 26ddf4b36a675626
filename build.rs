//! Compiles the procedures in `plans/` into the binary so `medic` works from any directory.
use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(|s| s.to_string()))
                .filter(|n| n.ends_with(".yaml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from("pub const BUILTIN_PLANS: &[(&str, &str)] = &[\n");
    for file in names {
        let path = dir.join(&file);
        println!("cargo:rerun-if-changed={}", path.display());
        let name = file.trim_end_matches(".yaml");
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_plans.rs");
    std::fs::write(dest, out).unwrap();
}
