// The program every spawn benchmark row starts: does nothing and exits 0. Static, so the same
// binary runs on the host and inside a task's minimal root, and exec costs no dynamic linking.
int main() { return 0; }
