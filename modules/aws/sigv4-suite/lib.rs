// Nothing: this package only names the crate that carries AWS's SigV4 test suite.
