// The capabilities are sealed: no program can declare that a built release may be deployed.
use tollgate::lifecycle::Built;
use tollgate::release::capability::CanDeploy;

impl CanDeploy for Built {}

fn main() {}
