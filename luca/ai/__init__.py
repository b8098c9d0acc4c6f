"""AI answers: providers behind one interface, the context they are sent, and the chain that picks one."""
