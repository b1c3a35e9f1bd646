//! The `tandem` binary (placeholder until the gateway lands).
fn main() {
    println!("tandem: not yet");
}
