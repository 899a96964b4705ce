// Package signin owns the interactive sign-in that obtains a person's grant
// for an account:
//
//   - the device authorization grant (RFC 8628): the verification address
//     and user code, a QR code of the address and a live countdown on a
//     terminal (a line every so often otherwise), and polling that honours
//     slow_down (§3.5) and outlasts network errors until the code expires;
//   - the authorization code grant with PKCE (RFC 7636) and a loopback
//     redirect (RFC 8252 §7.3), reached through ssh -L, or finished by the
//     person pasting the address the browser was sent to; a redirect whose
//     state is not this sign-in's is refused (RFC 6749 §10.12);
//   - the check that the ID token names the account's login
//     (auth.CheckIdentity, OpenID Connect Core §3.1.3.7) before a grant is
//     returned.
//
// SignIn.Device and SignIn.Browser run a sign-in from a terminal. They are
// built on the parts a caller without a terminal uses (the web console,
// with its own redirect endpoint): SignIn.Start and Pending.Finish, with
// ParsePasted for a pasted address; SignIn.StartDevice and DeviceCode.Wait,
// with QRModules to draw the verification address.
//
// Nothing here stores a grant or talks to the running daemon: the caller
// does ('relayd authorize' hands the grant over the status socket, where
// package auth checks it again before storing it). Used by 'relayd
// authorize' (cmd/relayd/authorize.go) and the web console; the daemon
// (internal/daemon) does not import it.
package signin
