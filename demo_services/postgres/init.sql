-- One database per service that keeps state (PostgreSQL's image runs this once, on a fresh volume).
CREATE DATABASE orders;
CREATE DATABASE inventory;
CREATE DATABASE payments;
