//! The page alone, against any API server: `cargo run -p ferry-ui --example serve --
//! KUBECONFIG [LISTEN]` (default listen 127.0.0.1:0). Sign in with a token the API server
//! accepts; the kubeconfig gives only the address and CA (its credentials are dropped).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kubeconfig = args.next().ok_or("usage: serve KUBECONFIG [LISTEN]")?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let app = ferry_ui::router(ferry_ui::Upstream::new(config)?);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("http://{}/ui/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
