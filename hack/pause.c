/* The pod sandbox ("pause") process of the real-node e2e suite: holds the pod's namespaces,
 * reaps orphaned children (it is PID 1 of the pod when PID namespaces are shared) and exits on
 * SIGTERM/SIGINT. Same behaviour as Kubernetes' build/pause/linux/pause.c, built with
 * `gcc -static` by hack/image_local.py because no registry image can be pulled here. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop}, child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
