//! Loads the socket LB into a cgroup and prints the error in full (debugging aid).
fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/sys/fs/cgroup".into());
    match ferry_sock::SocketLb::load(std::path::Path::new(&path), ferry_sock::MapSizes::default()) {
        Ok(lb) => println!("loaded: {lb:?}"),
        Err(e) => println!("error: {e:#?}"),
    }
}
