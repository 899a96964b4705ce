package testkit

// SetGrantedScopes makes the token endpoint answer every mail token of login
// with scope (RFC 6749 §5.1: the scopes granted, space-separated), as a
// provider does when the user consented to less than was asked: a grant
// missing a permission, for the tests of relayd doctor. Until it is
// called, tokens carry no scope, which means those requested.
func (p *IdP) SetGrantedScopes(login, scope string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.grantedScopes == nil {
		p.grantedScopes = map[string]string{}
	}
	p.grantedScopes[login] = scope
}
