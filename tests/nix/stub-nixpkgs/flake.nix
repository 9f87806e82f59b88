# The stub nixpkgs as a flake, for `nix flake check --no-build --override-input nixpkgs ...`:
# tests/nix/test_flake.py copies this folder with nixpkgs' lib beside it (./lib).
{
  description = "stand-in for nixpkgs: the real lib, packages that build nothing";
  outputs = _: import ./default.nix { lib = import ./lib; };
}
