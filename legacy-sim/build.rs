//! The schema migrations are embedded at build time (`refinery::embed_migrations!`): a new file in
//! `migrations/` must rebuild the crate, which a proc macro cannot ask cargo for itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
