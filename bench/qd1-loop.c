/* The C side of bench/qd1-loop.mjs (which builds and runs it): one QD1 4 KiB O_DIRECT random read loop,
 * in mode A (fio: wait inside io_uring_enter), B (the engine: DEFER_TASKRUN ring, registered eventfd, epoll,
 * read the eventfd, an enter to run the completion work) or C (QEMU: plain ring, epoll on the ring fd).
 *   qd1-loop A|B|C FILE SECONDS */
#define _GNU_SOURCE
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  if(argc<4){fprintf(stderr,"usage: qd1-loop A|B|C FILE SECONDS\n");return 2;}
  const char*mode=argv[1];const char*path=argv[2];double secs=atof(argv[3]);
  if(argc<4||(mode[0]!='A'&&mode[0]!='B'&&mode[0]!='C')){fprintf(stderr,"usage: qd1-loop A|B|C FILE SECONDS\n");return 2;}
  int fd=open(path,O_RDONLY|O_DIRECT);if(fd<0){perror(path);return 1;}off_t size=lseek(fd,0,SEEK_END);long nblk=size/4096;
  void*buf;posix_memalign(&buf,4096,4096);
  struct io_uring ring;struct io_uring_params p;memset(&p,0,sizeof p);
  int defer = mode[0]=='B';
  if(defer)p.flags=IORING_SETUP_SINGLE_ISSUER|IORING_SETUP_DEFER_TASKRUN|IORING_SETUP_COOP_TASKRUN;
  else if(mode[0]=='C')p.flags=0;
  else p.flags=0;
  if(io_uring_queue_init_params(8,&ring,&p)){perror("init");return 1;}
  int efd=eventfd(0,EFD_NONBLOCK|EFD_CLOEXEC);
  int ep=epoll_create1(0);struct epoll_event ev={.events=EPOLLIN};
  if(defer){io_uring_register_eventfd(&ring,efd);epoll_ctl(ep,EPOLL_CTL_ADD,efd,&ev);}
  if(mode[0]=='C'){epoll_ctl(ep,EPOLL_CTL_ADD,ring.ring_fd,&ev);}
  srand(1);long n=0,wakes=0;double t0=now(),end=t0+secs;
  struct rusage r0,r1;getrusage(RUSAGE_SELF,&r0);
  while(now()<end){
    struct io_uring_sqe*s=io_uring_get_sqe(&ring);
    io_uring_prep_read(s,fd,buf,4096,(off_t)(rand()%nblk)*4096);
    struct io_uring_cqe*c;
    if(mode[0]=='A'){io_uring_submit(&ring);io_uring_wait_cqe(&ring,&c);io_uring_cqe_seen(&ring,c);}
    else if(mode[0]=='B'){
      io_uring_submit(&ring);
      for(;;){struct epoll_event e;epoll_wait(ep,&e,1,-1);wakes++;uint64_t v;read(efd,&v,8);
        io_uring_get_events(&ring);
        if(io_uring_peek_cqe(&ring,&c)==0){io_uring_cqe_seen(&ring,c);break;}}
    } else if(mode[0]=='C'){
      io_uring_submit(&ring);
      for(;;){struct epoll_event e;epoll_wait(ep,&e,1,-1);wakes++;
        if(io_uring_peek_cqe(&ring,&c)==0){io_uring_cqe_seen(&ring,c);break;}}
    }
    n++;
  }
  double t=now()-t0;getrusage(RUSAGE_SELF,&r1);
  double cpu=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec+r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec+r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)*1e-6;
  printf("%s: %.0f IOPS, %.1f us/io, cpu %.1f us/io, wakes/io %.2f\n",mode,n/t,t/n*1e6,cpu/n*1e6,(double)wakes/n);
}
