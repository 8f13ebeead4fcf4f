"""The console page: a demo front end that drives the emails API and shows the live stream."""
