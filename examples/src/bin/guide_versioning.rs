//! The guide's section as a program: see [`signalbox_examples::guide::versioning`].

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    signalbox_examples::guide::serve(signalbox_examples::guide::versioning::hub()).await
}
