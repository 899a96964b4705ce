package testkit

import "net/http"

// GatedClient returns an HTTP client whose requests signal entered and then
// wait until gate is closed, for tests that act while a request is in
// flight.
func GatedClient(entered chan<- struct{}, gate <-chan struct{}) *http.Client {
	return &http.Client{Transport: gatedTransport{entered, gate}}
}

type gatedTransport struct {
	entered chan<- struct{}
	gate    <-chan struct{}
}

func (g gatedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return http.DefaultTransport.RoundTrip(r)
}
