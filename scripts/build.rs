//! Rebuilds when a bundled firmware profile or a console file is added or removed: rust-embed
//! reads those folders at compile time, and cargo only watches files it already knows of.

fn main() {
    println!("cargo:rerun-if-changed=firmware-profiles");
    println!("cargo:rerun-if-changed=console");
}
