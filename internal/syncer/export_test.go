package syncer

// Queued returns how many requests' applies wait for the next group.
func (s *Service) Queued() int {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	return len(s.queue)
}
